//! No network: neither the outside nor the host's loopback services.

use super::*;

#[tokio::test]
async fn network_is_unreachable_including_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // E20: TCP to the worker's loopback listener.
    blocked(
        &mut s,
        "E20 tcp loopback",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
        &[EACCES, "Connection refused", "Network is unreachable"],
    )
    .await;
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "E20: the listener must not have been reached"
    );
    // E21: UDP to the worker's loopback socket.
    let _ = run(
        &mut s,
        &format!("echo leak > /dev/udp/127.0.0.1/{udp_port}"),
    )
    .await;
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(udp.recv(&mut buf).is_err(), "E21: a UDP datagram escaped");
    // E22: only loopback exists.
    let out = run(&mut s, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(out, ok("lo"), "E22");
    // E23: no outside network (DNS resolution fails, raw connect fails).
    blocked(
        &mut s,
        "E23 outside",
        "exec 3<>/dev/tcp/1.1.1.1/80",
        &[EACCES, "Network is unreachable"],
    )
    .await;
    // E24: abstract unix sockets of the host are unreachable.
    let name = format!("wsn-test-{}", std::process::id());
    let abs = std::os::unix::net::UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    abs.set_nonblocking(true).unwrap();
    blocked(
        &mut s,
        "E24 abstract unix",
        &format!(
            "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{name}')\" 2>&1 | tail -1; exit ${{PIPESTATUS[0]}}"
        ),
        &["ConnectionRefusedError", "PermissionError"],
    )
    .await;
    assert!(abs.accept().is_err());
    s.close().await;
}
