//! Platform implementations of [`steward_model::ports::Platform`].

/// The contract suite every platform passes (a test harness that panics on a broken promise):
/// only in builds with the `testing` feature, which the tests turn on.
#[cfg(feature = "testing")]
pub mod contract;
pub mod docker;
pub mod kubernetes;
pub mod libvirt;
pub mod simulated;
pub mod volume;

/// A member address pool entry of a platform's config: `127.0.0.31` or `127.0.0.31-127.0.0.39`
/// (at most 65,536 addresses; no unspecified, multicast or broadcast address). The Docker and
/// libvirt platforms' `addresses` both read it.
pub fn parse_address_range(text: &str) -> Result<Vec<std::net::Ipv4Addr>, String> {
    use std::net::Ipv4Addr;
    let one = |s: &str| -> Result<Ipv4Addr, String> {
        let a: Ipv4Addr = s
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not an IPv4 address", s.trim()))?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
            return Err(format!("`{a}` cannot be a member's address"));
        }
        Ok(a)
    };
    match text.split_once('-') {
        None => Ok(vec![one(text)?]),
        Some((a, b)) => {
            let (a, b) = (u32::from(one(a)?), u32::from(one(b)?));
            if a > b {
                return Err(format!("range `{text}` runs backwards"));
            }
            if b - a >= 65_536 {
                return Err(format!("range `{text}` is larger than 65,536 addresses"));
            }
            Ok((a..=b).map(Ipv4Addr::from).collect())
        }
    }
}

/// An adoption rule's `role` (`database` when not given); an unknown one is an error at
/// `role` and reads as `database`. The same for every platform's rules.
pub(crate) fn adopted_role(
    role: Option<&str>,
    errors: &mut steward_model::ConfigErrors,
) -> steward_model::Role {
    role.unwrap_or("database").parse().unwrap_or_else(|_| {
        errors.push(
            "role",
            format!(
                "`{}`: expected database or balancer",
                role.unwrap_or_default()
            ),
        );
        steward_model::Role::Database
    })
}
