//! Tests of `destination`: the callback URL rules, the address ranges, and the resolver.

use super::*;

fn open() -> Destinations {
    Destinations::default()
}

fn insecure() -> Destinations {
    Destinations {
        allow_insecure: true,
        ..Destinations::default()
    }
}

#[test]
fn callbacks_are_https_or_loopback_http_when_allowed() {
    assert_eq!(
        open()
            .check("https://hooks.example.com/sluice?x=1")
            .as_deref(),
        Ok("https://hooks.example.com/sluice?x=1")
    );
    assert!(insecure().check("http://127.0.0.1:9000/hook").is_ok());
    assert!(insecure().check("http://localhost:9000/hook").is_ok());
    assert!(insecure().check("http://[::1]:9000/hook").is_ok());
    let refused = |d: Destinations, raw: &str| d.check(raw).expect_err(raw);
    assert_eq!(
        refused(open(), "http://127.0.0.1:9000/hook"),
        "plain http needs SLUICE_WEBHOOK_ALLOW_INSECURE=1 (local use only); use https"
    );
    assert_eq!(
        refused(insecure(), "http://hooks.example.com/x"),
        "plain http is allowed only to a loopback host; use https for hooks.example.com"
    );
    assert_eq!(
        refused(insecure(), "http://10.0.0.8/x"),
        "plain http is allowed only to a loopback host; use https for 10.0.0.8"
    );
    assert_eq!(
        refused(open(), "ftp://example.com/x"),
        "scheme \"ftp\" is not https"
    );
    assert_eq!(
        refused(open(), "https://user:pw@example.com/x"),
        "must not carry credentials (user:password@)"
    );
    assert!(refused(open(), "/relative/hook").starts_with("\"/relative/hook\" is not a URL"));
    assert_eq!(
        refused(open(), &format!("https://example.com/{}", "a".repeat(2048))),
        "longer than 2048 characters"
    );
    assert_eq!(
        refused(open(), "data:text/plain,hi"),
        "\"data:text/plain,hi\" has no host"
    );
}

#[test]
fn https_to_an_internal_address_literal_is_refused_naming_its_range() {
    for (url, range) in [
        ("https://10.0.0.8/x", "private"),
        ("https://172.20.1.1/x", "private"),
        ("https://192.168.1.10:8443/x", "private"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://100.64.0.1/x", "shared (CGNAT)"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://[::1]/x", "loopback"),
        ("https://[fd12:3456::1]/x", "unique-local"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[::ffff:10.0.0.8]/x", "private"),
        ("https://[::ffff:169.254.169.254]/x", "link-local"),
        ("https://[64:ff9b::a00:8]/x", "private"),
        ("https://[2002:a00:8::1]/x", "private"),
    ] {
        let why = open().check(url).expect_err(url);
        assert!(
            why.contains(&format!("is a {range} address")),
            "{url}: {why}"
        );
    }
    assert_eq!(
        open().check("https://localhost/x").expect_err("localhost"),
        "localhost is a loopback name; webhooks go to public hosts only"
    );
    assert!(open().check("https://LOCALHOST./x").is_err());
    assert!(open().check("https://api.localhost/x").is_err());
    assert!(open().check("https://8.8.8.8/x").is_ok());
    assert!(open().check("https://[2606:4700:4700::1111]/x").is_ok());
}

#[test]
fn with_allowed_domains_only_those_domains_and_names_under_them_pass() {
    let d = Destinations {
        allowed_domains: parse_allowed_domains("example.com, Hooks.Partner.io.").expect("valid"),
        ..Destinations::default()
    };
    assert_eq!(d.allowed_domains, ["example.com", "hooks.partner.io"]);
    assert!(d.check("https://example.com/x").is_ok());
    assert!(d.check("https://a.b.example.com/x").is_ok());
    assert!(d.check("https://HOOKS.partner.io/x").is_ok());
    for url in [
        "https://notexample.com/x",
        "https://example.com.evil.io/x",
        "https://partner.io/x",
    ] {
        let why = d.check(url).expect_err(url);
        assert!(
            why.ends_with("is not under a domain of SLUICE_WEBHOOK_ALLOWED_DOMAINS (example.com, hooks.partner.io)"),
            "{url}: {why}"
        );
    }
    assert_eq!(
        parse_allowed_domains("example.com,https://x.io").expect_err("a URL"),
        "\"https://x.io\" is not a domain name (e.g. hooks.example.com)"
    );
    assert!(parse_allowed_domains("10.0.0.1").is_err());
    assert_eq!(
        parse_allowed_domains(" , ").expect("empty"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_resolver_drops_internal_addresses_so_a_name_for_loopback_is_never_connected_to() {
    let name = |s: &str| s.parse::<Name>().expect("a name");
    let refused = open()
        .resolver()
        .resolve(name("localhost"))
        .await
        .err()
        .expect("localhost resolves to loopback only");
    assert!(
        refused
            .to_string()
            .starts_with("localhost resolves only to internal addresses"),
        "{refused}"
    );
    let local: Vec<SocketAddr> = insecure()
        .resolver()
        .resolve(name("localhost"))
        .await
        .map_err(|e| e.to_string())
        .expect("allowed for local use")
        .collect();
    assert!(local.iter().all(|a| a.ip().is_loopback()) && !local.is_empty());
}

/// A server on loopback that answers every request with a redirect to `to`.
async fn redirecting_to(to: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let app = axum::Router::new().fallback(move || {
        let to = to.clone();
        async move { (axum::http::StatusCode::FOUND, [("location", to)]) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_a_failed_connection_is_recorded_coarsely() {
    // Where the redirect points: a listener that must see no connection.
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    target.set_nonblocking(true).expect("non-blocking");
    let target_addr = target.local_addr().expect("its address");
    let hop = redirecting_to(format!("http://{target_addr}/internal")).await;
    let sender = crate::report::webhook::Sender::new(Some("k".repeat(16)), insecure(), 60)
        .expect("a sender");
    let answer = sender
        .post(&format!("http://{hop}/hook"), b"{}".to_vec())
        .await;
    assert_eq!(answer, Err("answered HTTP 302".to_owned()));
    assert!(
        target.accept().is_err(),
        "the redirect's target was connected to"
    );
    // A port nobody listens on: the uploader learns only that no HTTP answer came.
    drop(target);
    let answer = sender
        .post(&format!("http://{target_addr}/hook"), b"{}".to_vec())
        .await;
    assert_eq!(
        answer,
        Err("no HTTP answer (could not connect, or none within 10 s)".to_owned())
    );
}
