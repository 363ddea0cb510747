use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_burst_then_the_rate_per_source() {
    let r = Rates::new(10, 5);
    let t0 = Instant::now();
    let (a, b) = (ip("100.96.0.2"), ip("100.96.0.6"));
    for _ in 0..5 {
        assert_eq!(r.take(a, t0), Take::Ok);
    }
    // The first drop is reported at once, the next ones are counted for the next report.
    assert_eq!(r.take(a, t0), Take::Over { report: Some(1) });
    assert_eq!(r.take(a, t0), Take::Over { report: None });
    assert_eq!(r.take(a, t0), Take::Over { report: None });
    // Another source is not affected.
    assert_eq!(r.take(b, t0), Take::Ok);
    // 100 ms later one token is back.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(r.take(a, t1), Take::Ok);
    assert_eq!(r.take(a, t1), Take::Over { report: None });
    // Past a second after the first report, the drops since are reported.
    let t2 = t0 + Duration::from_secs(2);
    for _ in 0..5 {
        assert_eq!(r.take(a, t2), Take::Ok);
    }
    assert_eq!(r.take(a, t2), Take::Over { report: Some(4) });
}

#[test]
fn zero_rate_is_no_limit() {
    let r = Rates::new(0, 0);
    let t0 = Instant::now();
    for _ in 0..10_000 {
        assert_eq!(r.take(ip("100.96.0.2"), t0), Take::Ok);
    }
}

#[test]
fn idle_sources_are_forgotten() {
    let r = Rates::new(1, 1);
    let t0 = Instant::now();
    for i in 0..GC_AT {
        let a = IpAddr::from(std::net::Ipv4Addr::from(
            0x6460_0000 + u32::try_from(i).unwrap(),
        ));
        r.take(a, t0);
    }
    r.take(ip("10.9.9.9"), t0 + IDLE);
    assert_eq!(r.inner.lock().unwrap().len(), 1);
}
