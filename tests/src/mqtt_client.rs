//! Real MQTT clients for the device-identity suites (rumqttc as a device would use it), and
//! a private Mosquitto with the dynamic-security plugin.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use rumqttc::{Publish, SubscribeReasonCode};

use crate::eventually;

/// How long one MQTT step (CONNACK, SUBACK, PUBACK, a delivery) may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Options for a client at `host:port`, logging in with `login` when given.
pub fn options(host: &str, port: u16, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    opts
}

/// Connects and returns the client once the CONNACK accepted it, or the refusal.
pub async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut lp) = AsyncClient::new(opts, 16);
    loop {
        match tokio::time::timeout(WAIT, lp.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, lp)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ConnectionError::NetworkTimeout),
        }
    }
}

/// Whether the CONNECT was refused as "not authorized" (MQTT 3.1.1 return code 5).
pub fn refused(result: Result<(AsyncClient, EventLoop), ConnectionError>) -> bool {
    matches!(result, Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)))
}

/// Subscribes and returns the SUBACK's return codes.
pub async fn suback(
    client: &AsyncClient,
    lp: &mut EventLoop,
    filter: &str,
) -> anyhow::Result<Vec<SubscribeReasonCode>> {
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) = tokio::time::timeout(WAIT, lp.poll()).await?? {
            return Ok(ack.return_codes);
        }
    }
}

/// Publishes once with QoS 1; `Ok(true)` when the PUBACK came, `Ok(false)` when the
/// connection was closed instead.
pub async fn puback(client: &AsyncClient, lp: &mut EventLoop, topic: &str, body: String) -> anyhow::Result<bool> {
    client.publish(topic, QoS::AtLeastOnce, false, body).await?;
    loop {
        match tokio::time::timeout(WAIT, lp.poll()).await? {
            Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(true),
            Ok(_) => {}
            Err(_) => return Ok(false),
        }
    }
}

/// The next message delivered to this client within `wait`, if any.
pub async fn next_publish(lp: &mut EventLoop, wait: Duration) -> anyhow::Result<Option<Publish>> {
    let next = async {
        loop {
            match lp.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return Ok(p),
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
    };
    match tokio::time::timeout(wait, next).await {
        Ok(p) => p.map(Some),
        Err(_) => Ok(None),
    }
}

/// Polls until the broker ends the connection; `false` when it is still open after `wait`.
pub async fn ended(lp: &mut EventLoop, wait: Duration) -> bool {
    let end = async { while lp.poll().await.is_ok() {} };
    tokio::time::timeout(wait, end).await.is_ok()
}

/// Sends a RESET to detector 1 of `serial` as the demo administrator (re-authenticating
/// with the demo password) once the server's subscriber is connected, and returns the
/// command as the device listening on `lp` receives it on its `cmd` topic.
pub async fn reset_heard_by(server: &crate::TestServer, serial: &str, lp: &mut EventLoop) -> anyhow::Result<Publish> {
    // The server's subscriber is connected once a command can go out.
    let downlink = server.services.commands().downlink().clone();
    eventually("the subscriber is connected", || async {
        Ok(downlink.publish_command("SW-NOBODY", b"{}".to_vec()).await.is_ok().then_some(()))
    })
    .await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let detector = server.detector_id(serial, 1).await?;
    let sent = admin
        .ok(
            "mutation($d: ID!, $p: String) { sendCommand(input: {detectorId: $d, op: RESET, password: $p}) { id } }",
            serde_json::json!({"d": detector, "p": sparkwatch_api::demo::DEMO_PASSWORD}),
        )
        .await?;
    let id = sent["sendCommand"]["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let p = next_publish(lp, WAIT).await?.ok_or_else(|| anyhow::anyhow!("{serial} got no command"))?;
        let v: serde_json::Value = serde_json::from_slice(&p.payload)?;
        if v["id"] == id.as_str() {
            return Ok(p);
        }
    }
}

/// A Mosquitto of the test's own with the dynamic-security plugin, on a free port, its
/// state file in a temporary directory, and an administrator made by `mosquitto_ctrl
/// dynsec init`. Anonymous clients are refused.
pub struct PrivateDynsec {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The administrator's user name and password.
    pub admin: (String, String),
    dir: tempfile::TempDir,
}

/// Where Debian and others install the plugin.
const PLUGINS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
];

impl PrivateDynsec {
    /// Starts one; `None` (the caller prints "skipped") without `mosquitto`,
    /// `mosquitto_ctrl` or the plugin.
    pub async fn start() -> anyhow::Result<Option<PrivateDynsec>> {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let plugin = PLUGINS.into_iter().find(|p| std::path::Path::new(p).exists());
        let (Some(binary), Some(plugin)) = (binary, plugin) else { return Ok(None) };
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("dynamic-security.json");
        let admin = ("admin".to_owned(), format!("pw-{}", uuid::Uuid::now_v7().simple()));
        // The password as an argument: `init` asks on the terminal only without it.
        let init = std::process::Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&state)
            .args([&admin.0, &admin.1])
            .output();
        match init {
            Ok(out) if out.status.success() => {}
            Ok(out) => anyhow::bail!("mosquitto_ctrl dynsec init failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => return Ok(None), // no mosquitto_ctrl
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // `user root`: as root Mosquitto would switch to its own user, which cannot read the
        // private directory (it ignores the line when not root).
        let conf = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\nplugin {plugin}\n\
             plugin_opt_config_file {}\nlog_dest file {}/mosquitto.log\nlog_type all\n",
            state.display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let broker = PrivateDynsec { child, port, admin, dir };
        eventually("the private dynamic-security Mosquitto to listen", || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()))
        })
        .await?;
        Ok(Some(broker))
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for PrivateDynsec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
