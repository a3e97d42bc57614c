//! [`Fixed`]: a figure written with a fixed number of decimals (`{:.2}`), the standard
//! formatter's text, found faster.
//!
//! Why: every policy writes its figures and thresholds into each decision's details and summary
//! on every observation (`"p95 0.45 inside [0.50, 0.80]"`), and the standard formatter finds the
//! digits of `{:.N}` with Grisu, falling back to the much slower Dragon whenever the value lies
//! very close to an N-decimal number: always so for a configured threshold such as `0.80`. In a
//! fleet of 10,000 clusters these digits were 6 % of the tick, half of it in Dragon
//! (benches/fleet.rs).
//!
//! How: the value is scaled by 10^N and rounded as an integer. That is the exact answer unless
//! the scaled value lies near a half, where the rounding error of the scaling could matter; there,
//! and outside the plain cases (no width, no `+`, up to 9 decimals, not too large, finite), the
//! standard formatter writes it. So the text is always the standard formatter's.

use std::fmt;

/// `f64` whose `{:.N}` is the standard one, written without the slow path. Without a
/// precision it writes as `f64` does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fixed(pub f64);

/// Scaled values up to this are exact enough: the scaling's error is below 1e12 * 2^-53, about
/// 1e-4, far from the margin kept around a half.
const LARGEST: f64 = 1e12;

/// How far from a half a scaled value must be for its rounding to be certain.
const MARGIN: f64 = 1e-3;

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let plain = f.width().is_none() && !f.sign_plus() && !f.sign_aware_zero_pad();
        let Some(decimals) = f.precision().filter(|p| *p <= 9 && plain) else {
            return fmt::Display::fmt(&v, f);
        };
        let scale = 10_u64.pow(decimals as u32);
        let scaled = v.abs() * scale as f64;
        if !scaled.is_finite() || scaled >= LARGEST || (scaled.fract() - 0.5).abs() < MARGIN {
            return fmt::Display::fmt(&v, f);
        }
        // Below 1e12, so the cast is exact; `round` leaves no fraction.
        let mut n = scaled.round() as u64;
        // Digits from the last, into a buffer written once: `write!` with a padded integer
        // costs as much again as the digits (a sign, 12 whole digits, a point, 9 decimals).
        let mut buf = [0_u8; 24];
        let mut at = buf.len();
        let mut put = |b: u8| {
            at -= 1;
            buf[at] = b;
        };
        for _ in 0..decimals {
            put(b'0' + (n % 10) as u8);
            n /= 10;
        }
        if decimals > 0 {
            put(b'.');
        }
        loop {
            put(b'0' + (n % 10) as u8);
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // The standard formatter keeps the sign of a negative value that rounds to zero.
        if v.is_sign_negative() {
            put(b'-');
        }
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_the_standard_formatter_writes() {
        let mut values = vec![
            0.0, -0.0, 0.2, 0.7, 0.8, 0.45, 0.125, 0.005, 0.015, 2.675, 1.005, 99.995, 0.999,
            -0.001, -1.5, 1e11, 1e12, 1e15, 3.0e-9,
        ];
        // A spread of magnitudes and fractions, ties and near-ties included.
        let mut x = 1.234_567_f64;
        for i in 0..20_000 {
            x = (x * 7.31 + i as f64 * 0.013) % 2048.0;
            values.push(x);
            values.push(-x / 1000.0);
            values.push((x * 1000.0).round() / 1000.0);
            values.push((x * 100.0).round() / 100.0 + 0.005);
        }
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        for v in values {
            for p in 0..=4 {
                assert_eq!(
                    format!("{:.p$}", Fixed(v)),
                    format!("{v:.p$}"),
                    "{v:e} with {p} decimals"
                );
            }
            assert_eq!(format!("{}", Fixed(v)), format!("{v}"));
            assert_eq!(format!("{:8.2}", Fixed(v)), format!("{v:8.2}"));
        }
    }
}
