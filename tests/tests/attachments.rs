//! Photos over real HTTP, on SQLite and (when configured) PostgreSQL: `POST /attachments`
//! decides the type from the bytes and stops reading at the size limit; `GET
//! /attachments/{id}` and `attachment(id)` show an upload to its uploader only until it is
//! linked, then to people with its project in scope — and 404 to everyone else.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_entity::{attachment, project};
use sparkwatch_tests::{Gql, TestServer, backends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const LIMIT: usize = 10 * MIB;
const QUERY: &str = "query($id: ID!) { attachment(id: $id) { id contentType size url sha256 } }";

/// A JPEG's first bytes (SOI, APP0/JFIF) and some payload.
fn jpeg(len: usize) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0];
    b.resize(len.max(b.len()), 0xA5);
    b
}

/// A PNG signature and IHDR chunk.
fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    b.extend_from_slice(&[0x90, 0x77, 0x53, 0xDE]);
    b
}

/// An ISO BMFF `ftyp` box with the HEIC brand, as an iPhone writes it.
fn heic() -> Vec<u8> {
    let mut b = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    b.extend_from_slice(b"\0\0\0\x08free");
    b
}

/// Uploads `bytes` as the form field `field`, claiming `filename` and `mime`.
async fn upload_as(
    server: &TestServer,
    token: Option<&str>,
    field: &str,
    filename: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(StatusCode, Value)> {
    let part = Part::bytes(bytes).file_name(filename.to_owned()).mime_str(mime)?;
    let mut req =
        server.http.post(format!("{}/attachments", server.base)).multipart(Form::new().part(field.to_owned(), part));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status();
    Ok((status, res.json().await?))
}

/// Uploads `bytes` in the field `file`, claiming a JPEG.
async fn upload(server: &TestServer, gql: &Gql, bytes: Vec<u8>) -> anyhow::Result<(StatusCode, Value)> {
    upload_as(server, gql.token.as_deref(), "file", "photo.jpg", "image/jpeg", bytes).await
}

/// Uploads a photo that must be accepted; returns its id.
async fn uploaded(server: &TestServer, gql: &Gql, bytes: Vec<u8>) -> anyhow::Result<String> {
    let (status, body) = upload(server, gql, bytes).await?;
    anyhow::ensure!(status == StatusCode::CREATED, "upload refused: {status} {body}");
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// `(code, field)` of an error body.
fn error_of(body: &Value) -> (String, String) {
    let ext = &body["errors"][0]["extensions"];
    (ext["code"].as_str().unwrap_or("-").to_owned(), ext["field"].as_str().unwrap_or("-").to_owned())
}

fn validation_file() -> (String, String) {
    ("VALIDATION".into(), "file".into())
}

/// `GET /attachments/{id}` with `gql`'s token: status, headers and bytes.
async fn download(
    server: &TestServer,
    gql: &Gql,
    id: &str,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>)> {
    let mut req = server.http.get(format!("{}/attachments/{id}", server.base));
    if let Some(t) = &gql.token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let (status, headers) = (res.status(), res.headers().clone());
    Ok((status, headers, res.bytes().await?.to_vec()))
}

/// What an HTTP/1.1 exchange on a raw socket gave: the status, and how many body bytes the
/// client managed to send before the server answered and closed.
struct RawOutcome {
    status: u16,
    body: String,
    sent: usize,
}

/// Posts a multipart upload of a `file_len`-byte JPEG on a raw socket, writing the body while
/// reading the answer, so that a server that answers early is seen doing so. `chunked`
/// sends no Content-Length at all.
async fn raw_upload(server: &TestServer, token: &str, file_len: usize, chunked: bool) -> anyhow::Result<RawOutcome> {
    let boundary = "sparkwatch-boundary-7MA4YWxkTrZu0gW";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() + file_len + tail.len();
    let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {total}") };
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let request = format!(
        "POST /attachments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    );
    // The writer hands its half back instead of dropping it: a half-closed connection (FIN
    // after the body) makes the server abandon the request, as hyper does by default.
    let writer = tokio::spawn(async move {
        let frame = |bytes: &[u8]| {
            if chunked {
                [format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat()
            } else {
                bytes.to_vec()
            }
        };
        let mut sent = 0usize;
        if wr.write_all(request.as_bytes()).await.is_err() || wr.write_all(&frame(head.as_bytes())).await.is_err() {
            return (sent, wr);
        }
        let mut left = file_len;
        while left > 0 {
            let n = left.min(64 * 1024);
            // The JPEG signature once, at the start of the file.
            let piece = if sent == 0 { jpeg(n) } else { vec![0xA5; n] };
            if wr.write_all(&frame(&piece)).await.is_err() {
                return (sent, wr);
            }
            (sent, left) = (sent + n, left - n);
        }
        let _ = wr.write_all(&frame(tail.as_bytes())).await;
        if chunked {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        (sent, wr)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    })
    .await;
    anyhow::ensure!(read.is_ok(), "no answer within 30 s");
    // A server that stopped reading closes the connection, which ends the writer; one that
    // reads on takes everything.
    let (sent, _wr) = tokio::time::timeout(Duration::from_secs(30), writer).await??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok(RawOutcome { status, body, sent })
}

async fn project_id(server: &TestServer, name: &str) -> anyhow::Result<uuid::Uuid> {
    let p = project::Entity::find().filter(project::Column::Name.eq(name)).one(server.services.store().db()).await?;
    Ok(p.ok_or_else(|| anyhow::anyhow!("no project {name}"))?.id)
}

/// Links an upload as the work-order and check-in mutations do (they are not this suite's).
async fn link(server: &TestServer, id: &str, project: uuid::Uuid) -> anyhow::Result<()> {
    let ids = [id.parse::<uuid::Uuid>()?];
    let project = sparkwatch_domain::ids::ProjectId::from_uuid(project);
    sparkwatch_api::store::attachments::link(
        server.services.store().db(),
        &ids,
        project,
        "hazard",
        uuid::Uuid::now_v7(),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn uploads_are_typed_by_their_bytes_and_limited_in_size() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let token = electrician.token.clone().unwrap_or_default();

        // The type comes from the bytes: a JPEG sent as octet-stream, a PNG claimed to be a JPEG.
        let photo = jpeg(3000);
        let (status, body) =
            upload_as(&server, Some(&token), "file", "IMG_0001.bin", "application/octet-stream", photo.clone()).await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!((body["contentType"].as_str(), body["size"].as_u64()), (Some("image/jpeg"), Some(3000)));
        assert!(body["id"].as_str().is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()), "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(3), "exactly id, contentType, size: {body}");
        let (status, body) = upload(&server, &electrician, png()).await?;
        assert_eq!((status, body["contentType"].as_str()), (StatusCode::CREATED, Some("image/png")), "{body}");
        let (status, body) = upload_as(&server, Some(&token), "file", "IMG_0002.HEIC", "image/heic", heic()).await?;
        assert_eq!((status, body["contentType"].as_str()), (StatusCode::CREATED, Some("image/heic")), "{body}");

        // Anything else is refused, whatever it is called.
        for fake in [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj".to_vec(), b"just some text, honest".to_vec(), Vec::new()] {
            let (status, body) = upload(&server, &electrician, fake).await?;
            assert_eq!((status, error_of(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, validation_file()), "{body}");
        }
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0mif1miaf".to_vec();
        assert_eq!(upload(&server, &electrician, avif).await?.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // The photo must be in the field `file`.
        let (status, body) = upload_as(&server, Some(&token), "photo", "a.jpg", "image/jpeg", jpeg(100)).await?;
        assert_eq!((status, error_of(&body)), (StatusCode::BAD_REQUEST, validation_file()), "{body}");
        let res = server
            .http
            .post(format!("{}/attachments", server.base))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        // Exactly the limit is fine; one byte more is not.
        let (status, body) = upload(&server, &electrician, jpeg(LIMIT)).await?;
        assert_eq!((status, body["size"].as_u64()), (StatusCode::CREATED, Some(LIMIT as u64)), "{body}");
        let over = raw_upload(&server, &token, LIMIT + 1, false).await?;
        assert_eq!(over.status, 413, "{}", over.body);
        assert_eq!(error_of(&serde_json::from_str(&over.body)?), validation_file());
        // Without a Content-Length the server still stops reading at the limit: of 128 MiB
        // offered it takes the limit and what the sockets buffer, then answers and hangs up.
        let flood = raw_upload(&server, &token, 128 * MIB, true).await?;
        assert_eq!(flood.status, 413, "{}", flood.body);
        eprintln!("oversized chunked upload: {} bytes sent of 128 MiB", flood.sent);
        assert!(flood.sent < LIMIT + 24 * MIB, "the server read {} bytes of 128 MiB", flood.sent);
        // A declared length over the limit is refused before a byte of it is read.
        let declared = raw_upload(&server, &token, 64 * MIB, false).await?;
        assert_eq!(declared.status, 413, "{}", declared.body);
        assert!(declared.sent < 16 * MIB, "the server read {} bytes", declared.sent);

        // Who may upload: a token, and fieldwork or hazard.manage.
        let (status, body) = upload_as(&server, None, "file", "a.jpg", "image/jpeg", jpeg(100)).await?;
        assert_eq!((status, error_of(&body).0.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{body}");
        let (status, _) = upload_as(&server, Some("not-a-token"), "file", "a.jpg", "image/jpeg", jpeg(100)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let admin = server.demo_login("admin@demo.local").await?;
        admin
            .ok(
                "mutation { createUser(input: {email: \"look@demo.local\", password: \"look-only-2026\", roleId: \"viewer\"}) { id } }",
                json!({}),
            )
            .await?;
        let viewer = server.login("look@demo.local", "look-only-2026").await?;
        let (status, body) = upload(&server, &viewer, jpeg(100)).await?;
        assert_eq!((status, error_of(&body).0.as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{body}");
        let manager = server.demo_login("manager@demo.local").await?;
        assert_eq!(upload(&server, &manager, jpeg(100)).await?.0, StatusCode::CREATED);
    }
    Ok(())
}

#[tokio::test]
async fn an_upload_is_its_uploaders_until_linked_then_its_projects() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let other_tenant = server.demo_login("admin@demo-b.local").await?;
        let (mall, school) =
            (project_id(&server, "Riverside Mall").await?, project_id(&server, "No. 3 Primary School").await?);

        let photo = jpeg(50_000);
        let id = uploaded(&server, &electrician, photo.clone()).await?;
        // The uploader reads it back, byte for byte, with safe headers.
        let (status, headers, bytes) = download(&server, &electrician, &id).await?;
        assert_eq!(status, StatusCode::OK);
        assert!(bytes == photo, "the bytes came back changed");
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        assert_eq!(header("content-type"), "image/jpeg");
        assert_eq!(header("content-length"), "50000");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("content-disposition"), "inline");
        assert_eq!(header("cache-control"), "private");
        let seen = electrician.ok(QUERY, json!({"id": id})).await?["attachment"].clone();
        assert_eq!(seen["contentType"], "image/jpeg");
        assert_eq!(seen["size"], 50_000);
        assert_eq!(seen["url"], format!("/attachments/{id}"));
        assert_eq!(header("etag"), format!("\"{}\"", seen["sha256"].as_str().unwrap_or_default()));
        // The bytes are in the data dir under {tenant}/{yyyy}/{mm}/{id}.
        let row = attachment::Entity::find_by_id(id.parse::<uuid::Uuid>()?).one(server.services.store().db()).await?;
        let row = row.ok_or_else(|| anyhow::anyhow!("no row for {id}"))?;
        let month = row.created_at.format("%Y/%m");
        assert_eq!(row.storage_key, format!("{}/{month}/{id}", row.tenant_id));
        let file = server.config.data_dir.join("attachments").join(&row.storage_key);
        assert_eq!(std::fs::read(&file)?, photo, "{}", file.display());

        // Unlinked: nobody else sees it, not even the tenant admin; other tenants neither.
        for other in [&manager, &admin, &other_tenant] {
            assert_eq!(download(&server, other, &id).await?.0, StatusCode::NOT_FOUND);
            assert_eq!(other.ok(QUERY, json!({"id": id})).await?["attachment"], Value::Null);
        }
        assert_eq!(download(&server, &server.anonymous(), &id).await?.0, StatusCode::UNAUTHORIZED);
        assert_eq!(download(&server, &manager, "not-an-id").await?.0, StatusCode::NOT_FOUND);
        assert_eq!(download(&server, &manager, &uuid::Uuid::now_v7().to_string()).await?.0, StatusCode::NOT_FOUND);

        // Linked to the school: the school's people read it; the electrician (mall only) no
        // longer does, even as its uploader; the other tenant never.
        link(&server, &id, school).await?;
        assert_eq!(download(&server, &manager, &id).await?.0, StatusCode::OK);
        assert_eq!(download(&server, &admin, &id).await?.2, photo);
        assert_eq!(manager.ok(QUERY, json!({"id": id})).await?["attachment"]["id"], id.as_str());
        assert_eq!(download(&server, &electrician, &id).await?.0, StatusCode::NOT_FOUND);
        assert_eq!(electrician.ok(QUERY, json!({"id": id})).await?["attachment"], Value::Null);
        let (status, _, bytes) = download(&server, &other_tenant, &id).await?;
        assert_eq!((status, bytes.len() < 1000), (StatusCode::NOT_FOUND, true));

        // The manager's photo of the mall: the electrician, in the mall, reads it once linked.
        let theirs = uploaded(&server, &manager, png()).await?;
        assert_eq!(download(&server, &electrician, &theirs).await?.0, StatusCode::NOT_FOUND);
        link(&server, &theirs, mall).await?;
        let (status, headers, bytes) = download(&server, &electrician, &theirs).await?;
        assert_eq!((status, bytes), (StatusCode::OK, png()));
        assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("image/png"));
        // An API key (viewer role: site.read) limited to the school reads the school's photo.
        let key = admin
            .ok(
                "mutation($p: [ID!]) { createApiKey(input: {name: \"photos\", roleId: \"viewer\", projectIds: $p}) { secret } }",
                json!({"p": [school.to_string()]}),
            )
            .await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        assert_eq!(download(&server, &bms, &id).await?.0, StatusCode::OK);
        assert_eq!(
            download(&server, &bms, &theirs).await?.0,
            StatusCode::NOT_FOUND,
            "the key is limited to the school"
        );
    }
    Ok(())
}
