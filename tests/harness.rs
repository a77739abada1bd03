//! The test harness itself: it tells its own listeners from another process's, and a
//! gatehouse that finds one of its ports taken is started again on other ports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::Listener::{Nobody, Other, Us};
use common::*;
use std::net::{SocketAddr, TcpListener};

#[test]
fn listeners_tells_ours_from_another_process() {
    let mine = TcpListener::bind("127.0.0.1:0").unwrap();
    let mine = mine.local_addr().unwrap();
    let dead = dead_addr();
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    // The same port on another loopback address is another socket.
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], g.addr.port()));
    assert_eq!(
        listeners(std::process::id(), &[mine, dead.addr, g.addr, elsewhere]),
        [Us, Nobody, Other, Nobody]
    );
    assert_eq!(
        listeners(g.child.id(), &[g.addr, g.admin, mine]),
        [Us, Us, Other]
    );
}

/// Another process listening on the port: seen in the TCP table before gatehouse binds.
#[test]
fn a_port_another_process_listens_on_is_left_to_it() {
    let up = MockUpstream::start(Behaviour::Echo);
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let p = free_ports(2);
    let g = Gatehouse::try_start_on(&simple_config(&[up.addr], "", ""), (p[0], taken, p[1]))
        .expect("started on other ports");
    assert_ne!(g.admin.port(), taken);
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
    assert_eq!(up.count(), 1);
    squatter.set_nonblocking(true).unwrap();
    assert!(
        squatter.accept().is_err(),
        "the harness probed the squatter"
    );
}

/// A socket bound to the port without listening: gatehouse's bind fails, and its log says so.
#[test]
fn a_port_bound_by_another_socket_is_left_to_it() {
    let up = MockUpstream::start(Behaviour::Echo);
    let held = dead_addr();
    let p = free_ports(2);
    let taken = held.addr.port();
    let g = Gatehouse::try_start_on(&simple_config(&[up.addr], "", ""), (taken, p[0], p[1]))
        .expect("started on other ports");
    assert_ne!(g.addr.port(), taken);
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
}
