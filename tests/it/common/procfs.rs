//! Facts about a running process, read from `/proc` (Linux only, no libc).

use std::collections::HashSet;
use std::io;

/// TCP ports process `pid` is listening on (IPv4 and IPv6).
///
/// The socket inodes of the process (its `/proc/<pid>/fd/*` links `socket:[INODE]`) are matched
/// against the LISTEN rows (state `0A`) of `/proc/<pid>/net/tcp` and `tcp6`.
pub fn listening_ports(pid: u32) -> io::Result<Vec<u16>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" || !inodes.contains(cols[9]) {
                continue;
            }
            let Some((_, port_hex)) = cols[1].rsplit_once(':') else {
                continue;
            };
            if let Ok(port) = u16::from_str_radix(port_hex, 16)
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
    }
    Ok(ports)
}

/// Memory figures of a process, in KiB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStatus {
    /// Peak resident set size ("high water mark").
    pub vm_hwm_kib: u64,
    /// Current resident set size.
    pub vm_rss_kib: u64,
}

impl MemoryStatus {
    /// Peak resident set size in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.vm_hwm_kib as f64 / 1024.0
    }
}

/// Read `VmHWM` and `VmRSS` of process `pid`.
pub fn memory_status(pid: u32) -> io::Result<MemoryStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("{name} missing in /proc/{pid}/status")))
    };
    Ok(MemoryStatus {
        vm_hwm_kib: field("VmHWM:")?,
        vm_rss_kib: field("VmRSS:")?,
    })
}
