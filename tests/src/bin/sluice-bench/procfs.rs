//! What `/proc` says about processes: which there are, and the fields of their `stat` line.

use anyhow::Context as _;

/// The pids of the processes running now.
pub(crate) fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name, which is in parentheses and may hold
/// spaces: index 0 is the state, 1 the parent's pid, 11 and 12 utime and stime.
pub(crate) fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no command name in /proc/PID/stat")?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_listed_with_its_parent_in_its_stat_fields() {
        let me = std::process::id();
        assert!(pids().contains(&me));
        let fields = stat_fields(me).expect("own stat");
        assert_eq!(
            fields[1].parse::<u32>().ok(),
            Some(std::os::unix::process::parent_id())
        );
    }
}
