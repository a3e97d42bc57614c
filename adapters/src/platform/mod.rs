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
