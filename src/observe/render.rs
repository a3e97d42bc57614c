//! Printing an observation for people: one row per member, then the notes.
//!
//! Missing figures print as `-` (never `0`); stale ones carry a `~` so a reader sees they
//! are old. The JSON form is the [`Observation`] itself (serde), not this table.

use std::io::Write;
use std::time::Duration;

use steward_model::observation::{Figure, Freshness, Observation, PatroniRole};

/// Writes the table. `max_age` decides which figures are marked stale.
pub fn table(obs: &Observation, max_age: Duration, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "cluster {} at {}", obs.cluster, obs.at)?;
    let header = [
        "MEMBER",
        "ROLE",
        "STATE",
        "TL",
        "STREAMING",
        "LAG",
        "CPU",
        "MEMORY",
        "DISK",
        "CONNS",
        "PATRONI",
        "PLATFORM",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for m in &obs.members {
        let fig = |f: &Option<Figure>, fmt: &dyn Fn(f64) -> String| match Figure::freshness(
            f.as_ref(),
            obs.at,
            max_age,
        ) {
            Freshness::Fresh(v) => fmt(v),
            Freshness::Stale { value, .. } => format!("{}~", fmt(value)),
            Freshness::Missing => "-".into(),
        };
        let yes_no = |b: Option<bool>| match b {
            Some(true) => "yes".to_string(),
            Some(false) => "NO".to_string(),
            None => "-".to_string(),
        };
        let role = match (m.patroni_role, m.role) {
            (Some(r), _) => role_name(r).to_string(),
            (None, Some(r)) => r.as_str().to_string(),
            (None, None) => "-".into(),
        };
        rows.push(vec![
            m.name.clone(),
            role,
            m.patroni_state.clone().unwrap_or_else(|| "-".into()),
            m.timeline
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            yes_no(m.streaming),
            fig(&m.lag_bytes, &bytes),
            fig(&m.cpu_used, &|v| format!("{v:.2}")),
            fig(&m.memory_used, &bytes),
            fig(&m.disk_used, &bytes),
            fig(&m.connections, &|v| format!("{v:.0}")),
            yes_no(m.in_patroni),
            yes_no(m.in_platform),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    for note in &obs.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

fn role_name(r: PatroniRole) -> &'static str {
    match r {
        PatroniRole::Leader => "leader",
        PatroniRole::Replica => "replica",
        PatroniRole::StandbyLeader => "standby_leader",
        PatroniRole::SyncStandby => "sync_standby",
        PatroniRole::Unknown => "unknown",
    }
}

/// Bytes in binary units, short: `0 B`, `512 KiB`, `1.5 GiB`.
fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use steward_model::observation::{MemberObservation, Source};
    use steward_model::Timestamp;

    use super::*;

    #[test]
    fn missing_prints_dash_and_stale_is_marked() {
        let now = Timestamp::from_secs(1000);
        let obs = Observation {
            at: now,
            cluster: "c".into(),
            members: vec![MemberObservation {
                name: "pg1".into(),
                patroni_role: Some(PatroniRole::Leader),
                cpu_used: Some(Figure::new(
                    0.5,
                    Source::Prometheus,
                    Timestamp::from_secs(100),
                )),
                memory_used: Some(Figure::new(
                    1536.0 * 1024.0 * 1024.0,
                    Source::Prometheus,
                    now,
                )),
                lag_bytes: Some(Figure::new(0.0, Source::Patroni, now)),
                ..Default::default()
            }],
            notes: vec!["n1".into()],
            slots: Vec::new(),
        };
        let mut out = Vec::new();
        table(&obs, Duration::from_secs(60), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            ["pg1", "leader", "-", "-", "-", "0 B", "0.50~", "1.5 GiB", "-", "-", "-", "-"],
            "{text}"
        );
        assert!(text.ends_with("note: n1\n"), "{text}");
    }
}
