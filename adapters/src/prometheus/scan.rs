//! An instant query's answer read in one pass over its bytes, each series handed over as it is
//! met: what a fleet's answers need (a series per member of every cluster, 30,000 in one answer
//! for 10,000 clusters of 3; ten such answers per tick).
//!
//! Why not serde: the same walk through serde_json's `Deserializer` (visitors and seeds, no
//! allocation per series) spent ~85 ms of a 10,000-cluster tick in its generic machinery (a
//! call per token, a UTF-8 check per string, a visitor per label); this scanner knows the
//! shape it reads and checks the body's UTF-8 once (`benches/fleet.rs`, see the README). A
//! vector's series in the form Prometheus writes (compact, no escapes) is read in one go
//! ([`Scanner::compact_series`]); any other form token by token ([`Scanner::series`]).
//!
//! What it accepts is what [`super::answer::decode`] accepts, read the same way (its tests
//! compare the two on generated and broken answers): strict JSON (RFC 8259: no trailing
//! commas, no control characters in strings, escapes decoded, surrogates paired), a body in
//! UTF-8, nesting at most 128 deep (serde_json's limit); the answer's fields in any order
//! except `result` before `resultType` (see [`Kind::Unordered`]); unknown fields skipped; a
//! field of the answer, its `data` or a series given twice is an error. A series' `metric`
//! must be a map of strings; its `value` a sample `[<seconds>, "<number>"]` or `null`; a
//! series without `value` (a native histogram's) has no float sample.

use std::borrow::Cow;

use super::answer::Sample;

/// The kind of an answer's `data`, as [`each_instant`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vector,
    Matrix,
    Scalar,
    String,
    /// `result` came before `resultType`: its series were skipped, not handed over. Prometheus
    /// writes the type first; anything else is decoded whole with [`super::answer::decode`].
    Unordered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vector => "vector",
            Kind::Matrix => "matrix",
            Kind::Scalar => "scalar",
            Kind::String => "string",
            Kind::Unordered => "result before its resultType",
        }
    }
}

/// What [`each_instant`] saw of an answer besides its series: the fields of
/// [`super::answer::Answer`].
#[derive(Debug)]
pub(crate) struct Streamed<'a> {
    pub status: Cow<'a, str>,
    /// `None` when the answer had no `data`.
    pub kind: Option<Kind>,
    pub error_type: Option<Cow<'a, str>>,
    pub error: Option<Cow<'a, str>>,
}

/// Why a body could not be read, and where: the byte offset of the trouble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub offset: usize,
    pub what: &'static str,
}

impl ScanError {
    /// Line and column (1-based, the column in bytes) of the trouble in `body`.
    pub fn position(&self, body: &[u8]) -> (usize, usize) {
        let before = &body[..self.offset.min(body.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        (line, column + 1)
    }
}

/// serde_json's nesting limit: deeper is an error, not a stack overflow.
const MAX_DEPTH: usize = 128;

/// Reads an instant query's answer, handing each series of a vector to `each` as it is met
/// (the value of the label `label` if the series has it, the first if given twice, and its
/// sample) rather than collecting them: nothing is allocated per series unless a string has
/// escapes.
///
/// Series are handed over before the status is known (`status` may come last), so on an
/// error answer, or an error part-way, `each` has seen some series: its caller drops them.
pub(crate) fn each_instant<'a, F>(
    body: &'a [u8],
    label: &str,
    each: &mut F,
) -> Result<Streamed<'a>, ScanError>
where
    F: FnMut(Option<&str>, Option<Sample>),
{
    // Checked once for the whole body: every string below is then a slice between ASCII
    // quotes, so on character boundaries.
    let text = std::str::from_utf8(body).map_err(|e| ScanError {
        offset: e.valid_up_to(),
        what: "the answer is not UTF-8",
    })?;
    let mut s = Scanner { text, at: 0 };
    let streamed = s.answer(label, each)?;
    s.ws();
    if s.at < body.len() {
        return Err(s.error("trailing characters after the answer"));
    }
    Ok(streamed)
}

/// Takes a field's value once; a second time is an error.
fn once<T>(slot: &mut Option<T>, value: T, at: usize) -> Result<(), ScanError> {
    if slot.is_some() {
        return Err(ScanError {
            offset: at,
            what: "a field given twice",
        });
    }
    *slot = Some(value);
    Ok(())
}

/// Where the run of plain string bytes starting at `at` ends: the first `"`, `\\` or control
/// character, or the end. Eight bytes at a time (most of an answer is short label values and
/// keys: reading them a byte at a time was a third of the scan).
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n` (for bytes under 0x80; above, none is set). Borrows
    // only carry upwards, so the lowest flagged byte is always a true one.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let special =
            below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5C), 1) | below(word, 0x20);
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
    {
        at += 1;
    }
    at
}

/// Where the JSON number starting at `at` ends, or where and why it is not one.
fn number_end(b: &[u8], mut at: usize) -> Result<usize, (usize, &'static str)> {
    let digits = |at: &mut usize| {
        let from = *at;
        while b.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - from
    };
    let start = at;
    if b.get(at) == Some(&b'-') {
        at += 1;
    }
    match b.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => {
            digits(&mut at);
        }
        _ => return Err((start, "expected a number")),
    }
    if b.get(at) == Some(&b'.') {
        at += 1;
        if digits(&mut at) == 0 {
            return Err((at, "a number without digits after its point"));
        }
    }
    if let Some(b'e' | b'E') = b.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = b.get(at) {
            at += 1;
        }
        if digits(&mut at) == 0 {
            return Err((at, "a number without digits in its exponent"));
        }
    }
    Ok(at)
}

/// A JSON number's text (as [`number_end`] found it) as f64: `None` beyond f64's range, an
/// error as serde_json says it. The grammar is a subset of what `f64::from_str` reads.
fn finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A cursor over an answer's text.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn error(&self, what: &'static str) -> ScanError {
        ScanError {
            offset: self.at,
            what,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skips whitespace and returns the next byte, not consuming it.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// `null`, consumed if it is next.
    fn null(&mut self) -> Result<bool, ScanError> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal("null")?;
        Ok(true)
    }

    fn literal(&mut self, word: &'static str) -> Result<(), ScanError> {
        if self.bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("an unknown word (not true, false or null)"))
        }
    }

    /// Opens an object: `{`.
    fn open(&mut self, what: &'static str) -> Result<(), ScanError> {
        self.expect(b'{', what)
    }

    /// The next key of an open object, or `None` at its end (consumed). `first` is true until
    /// the first key is read.
    fn key(&mut self, first: &mut bool) -> Result<Option<Cow<'a, str>>, ScanError> {
        if !self.another(b'}', first)? {
            return Ok(None);
        }
        let key = self.string()?;
        self.expect(b':', "expected `:` after a key")?;
        Ok(Some(key))
    }

    /// [`Self::key`] for an object being skipped: the key is skipped too.
    fn skip_key(&mut self, first: &mut bool) -> Result<bool, ScanError> {
        if !self.another(b'}', first)? {
            return Ok(false);
        }
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.skip_string()?;
        self.expect(b':', "expected `:` after a key")?;
        Ok(true)
    }

    /// Whether an open object (`close` is `}`) or list (`]`) has another entry (the `,` before
    /// it consumed), or ends here (`close` consumed). `first` is true until the first entry.
    fn another(&mut self, close: u8, first: &mut bool) -> Result<bool, ScanError> {
        match self.peek() {
            Some(b) if b == close => {
                self.at += 1;
                return Ok(false);
            }
            Some(b',') if !*first => self.at += 1,
            _ if *first => {}
            _ if close == b'}' => return Err(self.error("expected `,` or `}` in an object")),
            _ => return Err(self.error("expected `,` or `]` in a list")),
        }
        *first = false;
        Ok(true)
    }

    /// A string, borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.at += 1;
        let start = self.at;
        let bytes = self.bytes();
        // Made at the first escape: what came before it, then each run and decoded escape.
        let mut owned: Option<String> = None;
        loop {
            let run = self.at;
            self.at = plain_run(bytes, self.at);
            match bytes.get(self.at) {
                Some(b'"') => {
                    let end = self.at;
                    self.at += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(&self.text[start..end]),
                        Some(mut copy) => {
                            copy.push_str(&self.text[run..end]);
                            Cow::Owned(copy)
                        }
                    });
                }
                Some(b'\\') => {
                    let copy = owned.get_or_insert_with(String::new);
                    copy.push_str(&self.text[run..self.at]);
                    self.at += 1;
                    self.escape(copy)?;
                }
                Some(_) => return Err(self.error("a control character in a string")),
                None => return Err(self.error("a string without its closing quote")),
            }
        }
    }

    /// Skips a string, checking its escapes' form only: serde_json does not decode what it
    /// skips, and so lets a lone surrogate pass there.
    fn skip_string(&mut self) -> Result<(), ScanError> {
        self.at += 1; // the opening quote, seen by the caller
        let bytes = self.bytes();
        loop {
            self.at = plain_run(bytes, self.at);
            match bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match bytes.get(self.at) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            self.at += 1;
                            self.hex4()?;
                        }
                        _ => return Err(self.error("an invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("a control character in a string")),
                None => return Err(self.error("a string without its closing quote")),
            }
        }
    }

    /// One escape, after its backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), ScanError> {
        let c = match self.bytes().get(self.at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.at += 1;
                let high = self.hex4()?;
                let c = match high {
                    0xD800..=0xDBFF => {
                        if !self.bytes()[self.at..].starts_with(b"\\u") {
                            return Err(self.error("a lone leading surrogate in an escape"));
                        }
                        self.at += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error("a lone leading surrogate in an escape"));
                        }
                        let code = 0x10000
                            + ((u32::from(high) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        char::from_u32(code)
                    }
                    0xDC00..=0xDFFF => None,
                    _ => char::from_u32(u32::from(high)),
                };
                let c = c.ok_or_else(|| self.error("a lone trailing surrogate in an escape"))?;
                out.push(c);
                return Ok(());
            }
            _ => return Err(self.error("an invalid escape")),
        };
        self.at += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let digits = self
            .bytes()
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("an escape cut short"))?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("an invalid escape"))?;
            n = n * 16 + v as u16;
        }
        self.at += 4;
        Ok(n)
    }

    /// A JSON number, as f64 (integers included, as serde reads one into an f64).
    fn number(&mut self) -> Result<f64, ScanError> {
        self.ws();
        let start = self.at;
        self.at = number_end(self.bytes(), start).map_err(|(at, what)| {
            self.at = at;
            self.error(what)
        })?;
        finite(&self.text[start..self.at]).ok_or_else(|| {
            self.at = start;
            self.error("a number out of range")
        })
    }

    /// Skips any value, checking it as it goes.
    fn skip(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let mut first = true;
                while self.skip_key(&mut first)? {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.at += 1;
                let mut first = true;
                while self.another(b']', &mut first)? {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            Some(b'"') => self.skip_string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("the answer ends early")),
        }
    }

    /// A string or `null`.
    fn optional_string(&mut self) -> Result<Option<Cow<'a, str>>, ScanError> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// The whole answer: `{"status": .., "data": .., "errorType": .., "error": ..}`.
    fn answer<F>(&mut self, label: &str, each: &mut F) -> Result<Streamed<'a>, ScanError>
    where
        F: FnMut(Option<&str>, Option<Sample>),
    {
        self.open("expected the answer's `{`")?;
        let (mut status, mut data, mut error_type, mut error) = (None, None, None, None);
        let mut first = true;
        while let Some(key) = self.key(&mut first)? {
            let at = self.at;
            match key.as_ref() {
                "status" => once(&mut status, self.string()?, at)?,
                "data" => once(&mut data, self.data(label, each)?, at)?,
                "errorType" => once(&mut error_type, self.optional_string()?, at)?,
                "error" => once(&mut error, self.optional_string()?, at)?,
                _ => self.skip(1)?,
            }
        }
        Ok(Streamed {
            status: status.ok_or_else(|| self.error("the answer has no `status`"))?,
            kind: data.flatten(),
            error_type: error_type.flatten(),
            error: error.flatten(),
        })
    }

    /// `data`: `null` or `{"resultType": .., "result": ..}`.
    fn data<F>(&mut self, label: &str, each: &mut F) -> Result<Option<Kind>, ScanError>
    where
        F: FnMut(Option<&str>, Option<Sample>),
    {
        if self.null()? {
            return Ok(None);
        }
        self.open("expected `data` to be an object or null")?;
        let (mut kind, mut result) = (None, None);
        let mut first = true;
        while let Some(key) = self.key(&mut first)? {
            let at = self.at;
            match key.as_ref() {
                "resultType" => {
                    let k = match self.string()?.as_ref() {
                        "vector" => Kind::Vector,
                        "matrix" => Kind::Matrix,
                        "scalar" => Kind::Scalar,
                        "string" => Kind::String,
                        _ => {
                            self.at = at;
                            return Err(self.error(
                                "an unknown resultType (not vector, matrix, scalar or string)",
                            ));
                        }
                    };
                    once(&mut kind, k, at)?;
                }
                "result" => {
                    let read = match kind {
                        Some(Kind::Vector) => {
                            self.vector(label, each)?;
                            Kind::Vector
                        }
                        Some(Kind::Matrix) => {
                            // Read to be checked as `decode` checks it; the caller refuses it.
                            self.matrix()?;
                            Kind::Matrix
                        }
                        Some(k) => {
                            self.skip(2)?;
                            k
                        }
                        None => {
                            self.skip(2)?;
                            Kind::Unordered
                        }
                    };
                    once(&mut result, read, at)?;
                }
                _ => self.skip(2)?,
            }
        }
        if kind.is_none() {
            return Err(self.error("`data` has no `resultType`"));
        }
        result
            .map(Some)
            .ok_or_else(|| self.error("`data` has no `result`"))
    }

    /// A vector's series, each handed to `each`.
    fn vector<F>(&mut self, label: &str, each: &mut F) -> Result<(), ScanError>
    where
        F: FnMut(Option<&str>, Option<Sample>),
    {
        self.expect(b'[', "expected a vector's list of series")?;
        let mut first = true;
        while self.another(b']', &mut first)? {
            if let Some((found, sample)) = self.compact_series(label) {
                each(found, Some(sample));
                continue;
            }
            let (found, value) = self.series(label, "value")?;
            each(found.as_deref(), value.flatten());
        }
        Ok(())
    }

    /// A matrix's series, checked and dropped.
    fn matrix(&mut self) -> Result<(), ScanError> {
        self.expect(b'[', "expected a matrix's list of series")?;
        let mut first = true;
        while self.another(b']', &mut first)? {
            self.series("", "values")?;
        }
        Ok(())
    }

    /// One series: the value of `label` among its labels, and its sample (`samples` names
    /// the field: `value` for a vector, `values` for a matrix, whose list is checked and not
    /// kept).
    #[allow(clippy::type_complexity)]
    fn series(
        &mut self,
        label: &str,
        samples: &str,
    ) -> Result<(Option<Cow<'a, str>>, Option<Option<Sample>>), ScanError> {
        self.open("expected a series' `{`")?;
        let (mut found, mut value) = (None, None);
        let mut first = true;
        while let Some(key) = self.key(&mut first)? {
            let at = self.at;
            if key == "metric" {
                once(&mut found, self.labels(label)?, at)?;
            } else if key == samples {
                let read = if samples == "value" {
                    if self.null()? {
                        None
                    } else {
                        Some(self.sample()?)
                    }
                } else {
                    self.samples()?;
                    None
                };
                once(&mut value, read, at)?;
            } else {
                self.skip(3)?;
            }
        }
        let found = found.ok_or_else(|| self.error("a series has no `metric`"))?;
        Ok((found, value))
    }

    /// A vector's series as Prometheus writes it, `{"metric":{"k":"v",..},"value":[t,"v"]}`
    /// (no whitespace, no escapes, no other field), read in one go: the value of `label` and the
    /// sample, as [`Self::series`] reads them. `None`, with nothing consumed, for any other form
    /// (or a broken one): [`Self::series`] reads it, and says what is wrong. Half of an answer's
    /// time went into the general path's token-by-token calls (benches/fleet.rs).
    fn compact_series(&mut self, label: &str) -> Option<(Option<&'a str>, Sample)> {
        let (b, text) = (self.bytes(), self.text);
        let mut at = self.at;
        let literal = |at: &mut usize, word: &[u8]| {
            let next = *at + word.len();
            (b.get(*at..next) == Some(word)).then(|| *at = next)
        };
        // A plain string's text (the opening quote at `at`), `at` past its closing quote.
        let plain = |at: &mut usize| {
            if b.get(*at) != Some(&b'"') {
                return None;
            }
            let end = plain_run(b, *at + 1);
            (b.get(end) == Some(&b'"')).then(|| {
                let s = &text[*at + 1..end];
                *at = end + 1;
                s
            })
        };
        literal(&mut at, b"{\"metric\":{")?;
        let mut found = None;
        if literal(&mut at, b"}").is_none() {
            loop {
                let key = plain(&mut at)?;
                literal(&mut at, b":")?;
                let value = plain(&mut at)?;
                if found.is_none() && key == label {
                    found = Some(value);
                }
                if literal(&mut at, b",").is_none() {
                    literal(&mut at, b"}")?;
                    break;
                }
            }
        }
        literal(&mut at, b",\"value\":[")?;
        let secs_end = number_end(b, at).ok()?;
        let at_secs = finite(&text[at..secs_end])?;
        at = secs_end;
        literal(&mut at, b",")?;
        let value = plain(&mut at)?.parse::<f64>().ok()?;
        literal(&mut at, b"]}")?;
        self.at = at;
        Some((found, Sample { at_secs, value }))
    }

    /// A series' labels: the first value of `label`, the others checked as strings.
    fn labels(&mut self, label: &str) -> Result<Option<Cow<'a, str>>, ScanError> {
        self.open("expected a series' labels as an object")?;
        let mut found = None;
        let mut first = true;
        while let Some(key) = self.key(&mut first)? {
            let value = self.string()?;
            if found.is_none() && key == label {
                found = Some(value);
            }
        }
        Ok(found)
    }

    /// A matrix series' `values`: a list of samples.
    fn samples(&mut self) -> Result<(), ScanError> {
        self.expect(b'[', "expected a list of samples")?;
        let mut first = true;
        while self.another(b']', &mut first)? {
            self.sample()?;
        }
        Ok(())
    }

    /// `[<unix seconds>, "<value>"]`: the value parsed (`NaN`, `+Inf`, `-Inf` included).
    fn sample(&mut self) -> Result<Sample, ScanError> {
        self.expect(b'[', "expected a sample [<unix seconds>, \"<value>\"]")?;
        let at_secs = self.number()?;
        self.expect(b',', "expected a sample's value after its time")?;
        let at = self.at;
        let text = self.string()?;
        let value = text.parse::<f64>().map_err(|_| ScanError {
            offset: at,
            what: "a sample's value is not a number, NaN or ±Inf",
        })?;
        self.expect(b']', "expected a sample's `]` after its value")?;
        Ok(Sample { at_secs, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::answer::{decode, Data};
    use proptest::prelude::*;

    /// Per series: the label asked for and the sample.
    type HandedOver = Vec<(Option<String>, Option<Sample>)>;

    /// What `each_instant` hands over, and what it says of the rest of the answer.
    fn streamed(body: &[u8], label: &str) -> (Streamed<'static>, HandedOver) {
        let mut seen = Vec::new();
        let s = each_instant(body, label, &mut |k: Option<&str>, v| {
            seen.push((k.map(str::to_string), v))
        })
        .unwrap();
        let owned = Streamed {
            status: Cow::Owned(s.status.into_owned()),
            kind: s.kind,
            error_type: s.error_type.map(|t| Cow::Owned(t.into_owned())),
            error: s.error.map(|e| Cow::Owned(e.into_owned())),
        };
        (owned, seen)
    }

    #[test]
    fn a_streamed_vector_hands_over_what_decode_collects() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"x","member":"pg1","member":"dup"},"value":[1795708800.5,"0.42"]},
            {"value":[1795708800,"NaN"],"metric":{"member":"p\u0067\"2"}},
            {"metric":{"job":"y"},"value":[1795708800,"1"]},
            {"metric":{"member":"pg5"},"histogram":[1795708800,{"count":"1"}]}]},"warnings":["w"]}"#;
        let (s, seen) = streamed(body, "member");
        assert_eq!((s.status.as_ref(), s.kind), ("success", Some(Kind::Vector)));
        let Some(Data::Vector(whole)) = decode(body).unwrap().data else {
            panic!("not a vector")
        };
        let want: Vec<_> = whole
            .iter()
            .map(|w| (w.metric.get("member").map(str::to_string), w.value))
            .collect();
        assert_eq!(seen.len(), want.len());
        for (a, b) in seen.iter().zip(&want) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.map(|s| s.at_secs), b.1.map(|s| s.at_secs));
            assert_eq!(
                a.1.map(|s| s.value.to_bits()),
                b.1.map(|s| s.value.to_bits())
            );
        }
        assert_eq!(
            seen[0].0.as_deref(),
            Some("pg1"),
            "the first of a repeated label"
        );
    }

    #[test]
    fn a_streamed_answer_says_what_it_was_without_series() {
        let (s, seen) = streamed(
            br#"{"data":{"result":[{"metric":{"member":"a"},"value":[1,"1"]}],"resultType":"vector"},"status":"success"}"#,
            "member",
        );
        assert_eq!(s.kind, Some(Kind::Unordered));
        assert!(
            seen.is_empty(),
            "nothing handed over before the type is known"
        );
        let (s, _) = streamed(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
            "member",
        );
        assert_eq!(s.kind, Some(Kind::Scalar));
        let (s, _) = streamed(br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#, "member");
        assert_eq!(s.kind, Some(Kind::Matrix));
        let (s, _) = streamed(
            br#"{"status":"error","errorType":"bad_data","error":"parse error","data":null}"#,
            "member",
        );
        assert_eq!(
            (
                s.status.as_ref(),
                s.kind,
                s.error_type.as_deref(),
                s.error.as_deref()
            ),
            ("error", None, Some("bad_data"), Some("parse error"))
        );
        for broken in [
            &br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"zero"]}]}}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"member":1},"value":[1,"1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#,
            br#"{"status":"success","status":"success","data":null}"#,
            br#"{"data":null}"#,
            br#"{"status":"success","data":{"resultType":"vector"}} x"#,
        ] {
            assert!(each_instant(broken, "member", &mut |_, _| {}).is_err());
            assert!(decode(broken).is_err(), "decode refuses it too");
        }
    }

    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_character() {
        let cases: &[&[u8]] = &[
            b"",
            b"abc",
            b"abcdefgh",
            b"abcdefghijk",
            b"\xc3\xa9\x7f\xff~",
        ];
        for plain in cases {
            for stop in [&b"\""[..], b"\\", b"\x00", b"\x1f", b""] {
                for lead in 0..9 {
                    let mut text = b"........".to_vec();
                    text.truncate(lead);
                    text.extend_from_slice(plain);
                    let end = text.len();
                    text.extend_from_slice(stop);
                    text.extend_from_slice(b"tail\"x");
                    let want = if stop.is_empty() { end + 4 } else { end };
                    assert_eq!(
                        plain_run(&text, 0),
                        want,
                        "{:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
    }

    #[test]
    fn escapes_numbers_and_errors_are_read_as_json_says() {
        let (_, seen) = streamed(
            br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"member":"a\u00e9\ud83d\ude00\n\/"},"value":[-1.5e3,"2"]},
                {"metric":{"member":"0"},"value":null}]}}"#,
            "member",
        );
        assert_eq!(seen[0].0.as_deref(), Some("a\u{e9}\u{1F600}\n/"));
        assert_eq!(seen[0].1.map(|s| s.at_secs), Some(-1500.0));
        assert_eq!(
            seen[1],
            (Some("0".into()), None),
            "a null value has no sample"
        );
        for (broken, what) in [
            (&br#"{"status":"success","data":null,}"#[..], "expected a string"),
            (br#"{"status":"succ\x"}"#, "an invalid escape"),
            (br#"{"status":"\ud800x"}"#, "a lone leading surrogate in an escape"),
            (b"{\"status\":\"a\tb\"}", "a control character in a string"),
            (br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[01,"1"]}]}}"#, "expected a sample's value after its time"),
            (br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1e999,"1"]}]}}"#, "a number out of range"),
            (br#"{"status":"success"} {}"#, "trailing characters after the answer"),
            (br#"{"status":"success","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#, "nested too deep"),
            (b"{\"status\":\"\xff\"}", "the answer is not UTF-8"),
        ] {
            let e = each_instant(broken, "member", &mut |_, _| {}).unwrap_err();
            assert_eq!(e.what, what, "{}", String::from_utf8_lossy(broken));
            assert!(decode(broken).is_err(), "decode refuses it too: {}", String::from_utf8_lossy(broken));
        }
        let body = b"{\n  \"status\": 1}";
        let e = each_instant(body, "member", &mut |_, _| {}).unwrap_err();
        assert_eq!(e.position(body), (2, 13));
    }

    /// Prometheus' own form is read in one go; any other form is left, untouched, to the
    /// general path (which the property test below compares with `decode`).
    #[test]
    fn the_compact_form_is_read_in_one_go_and_others_are_left_alone() {
        let compact = |series: &str| {
            let mut s = Scanner {
                text: series,
                at: 0,
            };
            let read = s.compact_series("member");
            (
                read.map(|(k, v)| (k.map(str::to_string), v.at_secs, v.value)),
                s.at,
            )
        };
        let plain = r#"{"metric":{"cluster":"c1","member":"pg-1","member":"x"},"value":[1795708800.5,"0.42"]}"#;
        assert_eq!(
            compact(plain),
            (Some((Some("pg-1".into()), 1795708800.5, 0.42)), plain.len())
        );
        let no_labels = r#"{"metric":{},"value":[1,"NaN"]}"#;
        let (read, at) = compact(no_labels);
        let (found, secs, value) = read.expect("read");
        assert_eq!(
            (found, secs, value.is_nan(), at),
            (None, 1.0, true, no_labels.len())
        );
        // Two series of the answer the lab's Prometheus (Debian 12's 2.42.0) wrote for `up`.
        for (series, member) in [
            (
                r#"{"metric":{"__name__":"up","balancer":"lab-haproxy-1","instance":"127.0.0.21:8404","job":"haproxy"},"value":[1796664955.195,"1"]}"#,
                None,
            ),
            (
                r#"{"metric":{"__name__":"up","instance":"127.0.0.11:8008","job":"patroni","member":"lab-pg-1"},"value":[1796664955.195,"1"]}"#,
                Some("lab-pg-1".to_string()),
            ),
        ] {
            let want = Some((member, 1796664955.195, 1.0));
            assert_eq!(compact(series), (want, series.len()), "{series}");
        }
        for other in [
            r#"{ "metric":{"member":"pg-1"},"value":[1,"1"]}"#,
            r#"{"metric":{"member":"pg\u002d1"},"value":[1,"1"]}"#,
            r#"{"metric":{"member":"pg-1"},"value":[1,"1"],"x":1}"#,
            r#"{"value":[1,"1"],"metric":{"member":"pg-1"}}"#,
            r#"{"metric":{"member":"pg-1"},"value":null}"#,
            r#"{"metric":{"member":"pg-1"},"value":[1,"one"]}"#,
            r#"{"metric":{"member":"pg-1"},"value":[1e999,"1"]}"#,
            r#"{"metric":{"member":"pg-1","job":2},"value":[1,"1"]}"#,
            r#"{"metric":{"member":"pg-1"},"value":[1,"1"]"#,
        ] {
            assert_eq!(compact(other), (None, 0), "{other}");
        }
    }

    /// One generated series, written in JSON with its fields in the generated order.
    fn series_json(
        labels: &[(String, String)],
        value: &Option<(i64, String)>,
        extra: bool,
        value_first: bool,
    ) -> String {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        let metric = format!(r#""metric":{{{}}}"#, labels.join(","));
        let value = match value {
            Some((t, v)) => format!(r#""value":[{t}.25,{}]"#, json(v)),
            None => r#""histogram":[1,{"count":"1"}]"#.to_string(),
        };
        let mut fields = if value_first {
            vec![value, metric]
        } else {
            vec![metric, value]
        };
        if extra {
            fields.insert(
                1,
                r#""exemplar":{"a":[true,false,null,-0.5e-2]}"#.to_string(),
            );
        }
        format!("{{{}}}", fields.join(","))
    }

    /// A string as JSON, with some characters escaped where serde_json would not.
    fn json(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                'é' => out.push_str("\\u00e9"),
                '😀' => out.push_str("\\ud83d\\ude00"),
                '/' => out.push_str("\\/"),
                c => {
                    let quoted = serde_json::to_string(&c.to_string()).expect("a string");
                    out.push_str(&quoted[1..quoted.len() - 1]);
                }
            }
        }
        out.push('"');
        out
    }

    /// What the scanner reads of a body, or `None` where it refuses it; `Unordered` answers
    /// are left to `decode` by the client, so they read as `Some` without series.
    fn scanned(body: &[u8]) -> Option<(String, Option<&'static str>, HandedOver)> {
        let mut seen = Vec::new();
        let s = each_instant(body, "member", &mut |k: Option<&str>, v| {
            seen.push((k.map(str::to_string), v))
        })
        .ok()?;
        Some((s.status.into_owned(), s.kind.map(Kind::as_str), seen))
    }

    /// What `decode` reads of a body, in the same terms.
    fn decoded(body: &[u8]) -> Option<(String, Option<&'static str>, HandedOver)> {
        let a = decode(body).ok()?;
        let kind = a.data.as_ref().map(Data::kind);
        let seen = match a.data {
            Some(Data::Vector(v)) => v
                .iter()
                .map(|s| (s.metric.get("member").map(str::to_string), s.value))
                .collect(),
            _ => Vec::new(),
        };
        Some((a.status.into_owned(), kind, seen))
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("member".to_string()),
            Just("job".to_string()),
            "[a-z\\\\\"é😀/\t ]{0,6}",
        ]
    }

    fn answer() -> impl Strategy<Value = String> {
        let series = (
            prop::collection::vec((label(), "[a-z0-9é😀\"\\\\/]{0,8}"), 0..4),
            prop::option::of((
                0i64..2_000_000_000,
                prop_oneof![
                    Just("NaN".to_string()),
                    Just("+Inf".to_string()),
                    Just("-Inf".to_string()),
                    Just("1e3".to_string()),
                    Just("zero".to_string()),
                    (-1e9f64..1e9).prop_map(|v| v.to_string()),
                ],
            )),
            any::<bool>(),
            any::<bool>(),
        );
        (
            prop::collection::vec(series, 0..5),
            prop_oneof![
                Just("vector"),
                Just("matrix"),
                Just("scalar"),
                Just("tensor")
            ],
            prop_oneof![Just("success"), Just("error")],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(series, kind, status, type_first, status_last)| {
                let list: Vec<String> = series
                    .iter()
                    .map(|(l, v, extra, first)| series_json(l, v, *extra, *first))
                    .collect();
                let result = format!(r#""result":[{}]"#, list.join(","));
                let kind = format!(r#""resultType":"{kind}""#);
                let data = if type_first {
                    format!("{{{kind},{result}}}")
                } else {
                    format!("{{{result},{kind}}}")
                };
                let status = format!(r#""status":"{status}""#);
                let fields = [
                    format!(r#""data":{data}"#),
                    r#""warnings":["w"]"#.to_string(),
                ];
                if status_last {
                    format!("{{{},{status}}}", fields.join(","))
                } else {
                    format!("{{{status},{}}}", fields.join(","))
                }
            })
    }

    /// An edit of one character: removed, or one of JSON's own inserted.
    fn edit() -> impl Strategy<Value = (usize, Option<char>)> {
        (
            any::<usize>(),
            prop::option::of(prop::sample::select(vec![
                '{', '}', '[', ']', ',', ':', '"', '\\', 'n', '0', '-', '.', 'e', ' ', '\u{1}',
            ])),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The scanner reads what `decode` reads (the same series, labels and samples, the
        /// same status and kind) and refuses what it refuses, on answers whole or with an
        /// edit.
        #[test]
        fn the_scanner_reads_as_decode_does(body in answer(), edits in prop::collection::vec(edit(), 0..3)) {
            let mut chars: Vec<char> = body.chars().collect();
            for (at, insert) in edits {
                let at = at % (chars.len() + 1);
                match insert {
                    Some(c) => chars.insert(at, c),
                    None if at < chars.len() => {
                        chars.remove(at);
                    }
                    None => {}
                }
            }
            let body: String = chars.into_iter().collect();
            let scanned = scanned(body.as_bytes());
            let decoded = decoded(body.as_bytes());
            match (&scanned, &decoded) {
                // Left to `decode` by the client.
                (Some((_, Some("result before its resultType"), seen)), _) => {
                    prop_assert!(seen.is_empty());
                }
                (Some((status, kind, seen)), Some((want_status, want_kind, want))) => {
                    prop_assert_eq!(status, want_status);
                    prop_assert_eq!(kind, want_kind);
                    prop_assert_eq!(seen.len(), want.len());
                    for (a, b) in seen.iter().zip(want) {
                        prop_assert_eq!(&a.0, &b.0);
                        prop_assert_eq!(a.1.map(|s| s.at_secs.to_bits()), b.1.map(|s| s.at_secs.to_bits()));
                        prop_assert_eq!(a.1.map(|s| s.value.to_bits()), b.1.map(|s| s.value.to_bits()));
                    }
                }
                (None, None) => {}
                _ => prop_assert!(false, "scanner {:?}, decode {:?}: {}", scanned, decoded, body),
            }
        }
    }
}
