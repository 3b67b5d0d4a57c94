//! Free loopback ports, for processes that bind their own (in-process clusters bind
//! `127.0.0.1:0` and need none). A port is only free when probed: another process can take it
//! before the test binds it, which shows as "address in use" / "cannot listen".

use std::net::TcpListener;

/// A loopback port that was free just now (bound, then released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `count` distinct loopback ports that were free just now (probed together, so they differ).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind probe"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("probe address").port())
        .collect()
}

/// A base port `P` such that `P+1..=P+branches` could all be bound on 127.0.0.1 just now
/// (`bank server --base-port P` puts branch `n` on `P+n`).
pub fn free_base_port(branches: u16) -> u16 {
    for _ in 0..100 {
        let q = free_port();
        if q < 2 || u32::from(q) + u32::from(branches) > 65_536 {
            continue;
        }
        let held: Result<Vec<TcpListener>, _> = (q..q + branches)
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if held.is_ok() {
            return q - 1;
        }
    }
    panic!("no run of {branches} free consecutive ports found on 127.0.0.1");
}
