//! Sign-in limits keyed on the client's address over real HTTP: behind a trusted proxy
//! (`--trusted-proxies`) clients named by `X-Forwarded-For`/`Forwarded` are limited apart, so
//! one attacker does not lock everybody out; from an untrusted peer those headers are ignored,
//! so forging them does not escape the limit. With Redis, instances count together.

use std::sync::Arc;

use serde_json::{Value, json};
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_api::service::SystemClock;
use sparkwatch_tests::{Backend, Options, PrivateRedis, TestServer, backends};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;

const LOGIN: &str = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";

/// A server trusting `proxies`, allowing 3 sign-in attempts per address per minute; its URL.
async fn server(backend: &Backend, proxies: &str) -> anyhow::Result<(String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut config = sparkwatch_tests::config(backend, dir.path()).await?;
    config.trusted_proxies =
        proxies.split(',').filter(|p| !p.is_empty()).map(str::parse).collect::<Result<Vec<ipnet::IpNet>, _>>()?;
    let limits = Limits { address_attempts: 3, ..Limits::default() };
    let services = sparkwatch_api::services(&config, Arc::new(SystemClock), limits).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/graphql", listener.local_addr()?);
    tokio::spawn(sparkwatch_api::run_with(services, listener, Default::default(), std::future::pending::<()>()));
    Ok((url, dir))
}

/// The error code of a wrong-password sign-in of `login` with the given forwarding header.
async fn attempt(url: &str, login: &str, header: (&str, &str)) -> anyhow::Result<String> {
    let body = json!({"query": LOGIN, "variables": {"i": {"login": login, "password": "not-the-password"}}});
    let res: Value =
        reqwest::Client::new().post(url).header(header.0, header.1).json(&body).send().await?.json().await?;
    Ok(res["errors"][0]["extensions"]["code"].as_str().unwrap_or("OK").to_owned())
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_apart() -> anyhow::Result<()> {
    for backend in backends() {
        let (url, _dir) = server(&backend, "127.0.0.1/32").await?;
        // Each attempt on another account, so only the address limit can apply.
        for i in 0..3 {
            let code = attempt(&url, &format!("a{i}@x.local"), ("x-forwarded-for", "203.0.113.1")).await?;
            assert_eq!(code, "UNAUTHENTICATED");
        }
        assert_eq!(attempt(&url, "a9@x.local", ("x-forwarded-for", "203.0.113.1")).await?, "RATE_LIMITED");
        // Another client behind the same proxy is not locked out.
        assert_eq!(attempt(&url, "b0@x.local", ("x-forwarded-for", "203.0.113.2")).await?, "UNAUTHENTICATED");
        assert_eq!(attempt(&url, "b1@x.local", ("forwarded", "for=203.0.113.3")).await?, "UNAUTHENTICATED");
        // Prepending a made-up address does not escape: the proxy's entry is the last one.
        let chain = "198.51.100.77, 203.0.113.1";
        assert_eq!(attempt(&url, "a8@x.local", ("x-forwarded-for", chain)).await?, "RATE_LIMITED");
    }
    Ok(())
}

#[tokio::test]
async fn forged_headers_from_an_untrusted_peer_are_ignored() -> anyhow::Result<()> {
    for backend in backends() {
        let (url, _dir) = server(&backend, "10.0.0.0/8").await?;
        for i in 0..3 {
            let forged = format!("203.0.113.{i}");
            let code = attempt(&url, &format!("c{i}@x.local"), ("x-forwarded-for", &forged)).await?;
            assert_eq!(code, "UNAUTHENTICATED");
        }
        // A fresh forged address each time: still the one peer, still limited.
        assert_eq!(attempt(&url, "c9@x.local", ("x-forwarded-for", "203.0.113.99")).await?, "RATE_LIMITED");
        assert_eq!(attempt(&url, "c8@x.local", ("forwarded", "for=203.0.113.98")).await?, "RATE_LIMITED");
    }
    Ok(())
}

/// The code of a sign-in of `login` with `password` on `server`.
async fn sign_in(server: &TestServer, login: &str, password: &str) -> anyhow::Result<String> {
    let res = server.anonymous().run(LOGIN, json!({"i": {"login": login, "password": password}})).await?;
    Ok(res["errors"][0]["extensions"]["code"].as_str().unwrap_or("OK").to_owned())
}

/// Two instances over one (private) Redis count sign-ins together: five wrong passwords for
/// one account, split 3 + 2 between the instances, lock it on both (each alone saw fewer
/// than five), and an address's attempts add up the same way. With Redis killed, each
/// instance limits on its own and a right password still signs in.
#[tokio::test]
async fn instances_share_sign_in_limits_through_redis() -> anyhow::Result<()> {
    let Some(mut redis) = PrivateRedis::start().await? else {
        eprintln!("skipped: no redis-server binary");
        return Ok(());
    };
    for backend in backends() {
        let limits = Limits { address_attempts: 12, ..Limits::default() };
        let opts = Options { login_limits: limits, redis_url: Some(redis.url()), ..Options::default() };
        let a = TestServer::start_opts(&backend, opts.clone()).await?;
        sparkwatch_api::demo::seed(&a.services).await?;
        let b = a.sibling(opts).await?;
        let manager = "manager@demo.local";
        for server in [&a, &a, &a, &b, &b] {
            assert_eq!(sign_in(server, manager, "wrong").await?, "UNAUTHENTICATED");
        }
        for server in [&a, &b] {
            assert_eq!(sign_in(server, manager, PASSWORD).await?, "RATE_LIMITED", "locked on every instance");
        }
        // Seven attempts so far from 127.0.0.1; five more (other accounts) reach the 12.
        for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
            assert_eq!(sign_in(server, &format!("nobody{i}@demo.local"), "wrong").await?, "UNAUTHENTICATED");
        }
        assert_eq!(sign_in(&b, "admin@demo.local", PASSWORD).await?, "RATE_LIMITED", "the address is used up");

        redis.down();
        // Redis away: sign-in goes on, limited by each instance's own counters (A has seen 7
        // of its 12 attempts; the shared lock of the manager is not visible any more).
        assert_eq!(sign_in(&a, "electrician@demo.local", PASSWORD).await?, "OK", "Redis away blocks nobody");
        redis.up().await?;
    }
    Ok(())
}
