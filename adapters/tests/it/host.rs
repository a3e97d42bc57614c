//! The host source: the capacity check is pure and tested with made-up figures; reading the
//! real machine is tested for consistency (this machine's figures are not known in advance).

use std::path::{Path, PathBuf};

use steward_adapters::host::{
    can_fit, disk_holding, DiskFigures, Fit, GrowRequest, Headroom, HostFigures,
};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn host() -> HostFigures {
    HostFigures {
        cpus: 2,
        memory_total_bytes: 24 * GIB,
        memory_available_bytes: 4 * GIB,
        disk: Some(DiskFigures {
            mount_point: "/var/lib/docker".into(),
            total_bytes: 100 * GIB,
            available_bytes: 10 * GIB,
        }),
    }
}

#[test]
fn a_grow_within_the_host_fits() {
    let grow = GrowRequest {
        cpus: 2.0,
        extra_memory_bytes: 3 * GIB,
        extra_disk_bytes: 8 * GIB,
    };
    assert_eq!(can_fit(&host(), &grow, &Headroom::default()), Fit::Fits);
}

#[test]
fn every_reason_a_grow_does_not_fit_is_given() {
    let grow = GrowRequest {
        cpus: 3.0,
        extra_memory_bytes: 4 * GIB,
        extra_disk_bytes: 9 * GIB + 512 * MIB,
    };
    let Fit::DoesNotFit(reasons) = can_fit(&host(), &grow, &Headroom::default()) else {
        panic!("should not fit")
    };
    assert_eq!(
        reasons,
        [
            "3 vCPUs asked, the host has 2",
            "4096 MiB more memory asked, 4096 MiB available minus 512 MiB headroom leaves 3584 MiB",
            "9728 MiB more disk asked, 10240 MiB available on /var/lib/docker minus 1024 MiB headroom leaves 9216 MiB",
        ]
    );
}

#[test]
fn more_disk_on_an_unknown_filesystem_is_refused_and_headroom_never_underflows() {
    let mut h = host();
    h.disk = None;
    h.memory_available_bytes = 100 * MIB;
    let grow = GrowRequest {
        cpus: 1.0,
        extra_memory_bytes: 1,
        extra_disk_bytes: 1,
    };
    let Fit::DoesNotFit(reasons) = can_fit(&h, &grow, &Headroom::default()) else {
        panic!("should not fit")
    };
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].ends_with("leaves 0 MiB"), "{reasons:?}");
    assert!(
        reasons[1].contains("filesystem of the data path is unknown"),
        "{reasons:?}"
    );
    // Growing only CPU needs no disk figures.
    assert_eq!(
        can_fit(
            &h,
            &GrowRequest {
                cpus: 1.0,
                ..Default::default()
            },
            &Headroom::default()
        ),
        Fit::Fits
    );
}

#[test]
fn the_deepest_mount_point_holds_a_path() {
    let d = |m: &str| DiskFigures {
        mount_point: PathBuf::from(m),
        total_bytes: 1,
        available_bytes: 1,
    };
    let disks = [
        d("/"),
        d("/var"),
        d("/var/lib/steward"),
        d("/var/lib/stewardx"),
    ];
    let pick = |p: &str| disk_holding(&disks, Path::new(p)).map(|d| d.mount_point.clone());
    assert_eq!(
        pick("/var/lib/steward/pg1"),
        Some(PathBuf::from("/var/lib/steward"))
    );
    // A path prefix by characters is not a mount prefix by components.
    assert_eq!(pick("/var/lib/stewar"), Some(PathBuf::from("/var")));
    assert_eq!(pick("/home"), Some(PathBuf::from("/")));
}

#[test]
fn reading_this_machine_gives_consistent_figures() {
    let h = HostFigures::read(Some(Path::new("/"))).unwrap();
    assert!(h.cpus >= 1, "{h:?}");
    assert!(
        h.memory_total_bytes > 0 && h.memory_available_bytes <= h.memory_total_bytes,
        "{h:?}"
    );
    if let Some(d) = &h.disk {
        assert!(d.available_bytes <= d.total_bytes, "{h:?}");
        assert!(Path::new("/").starts_with(&d.mount_point), "{h:?}");
    }
    assert_eq!(HostFigures::read(None).unwrap().disk, None);
}
