#![allow(clippy::unwrap_used)]
use sha2::Digest;
#[test]
fn bench_parts() {
    let frame: Vec<u8> = "0123456789abcdefghijklmnopqrstuvwxyz ┃ é \r\n".repeat(400).into_bytes();
    let n = 40 * 1024 * 1024 / frame.len();
    let t = std::time::Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut total = 0;
    for _ in 0..n {
        let s = std::str::from_utf8(&frame).unwrap();
        serde_json::to_writer(&mut buf, &(1.234567f64, "o", s)).unwrap();
        total += buf.len(); buf.clear();
    }
    eprintln!("serde {:.0} MiB/s", total as f64 / t.elapsed().as_secs_f64() / 1048576.0);
    let t = std::time::Instant::now();
    let mut h = sha2::Sha256::new();
    for _ in 0..n { h.update(&frame); }
    let _ = h.finalize();
    eprintln!("sha {:.0} MiB/s", (n*frame.len()) as f64 / t.elapsed().as_secs_f64() / 1048576.0);
    let t = std::time::Instant::now();
    for _ in 0..n { let c = frame.clone(); std::hint::black_box(c); }
    eprintln!("clone {:.0} MiB/s", (n*frame.len()) as f64 / t.elapsed().as_secs_f64() / 1048576.0);
}
