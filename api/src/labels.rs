//! Printable checkpoint labels: `GET /checkpoints/{id}/qr.svg` and `…/qr.png` (bearer token
//! as on `/graphql`; a checkpoint outside the caller's tenant or scope is `404`).
//!
//! The label is one SVG: the QR code of the checkpoint's signed payload (drawn from the
//! `qrcode` crate's modules, medium error correction, a 4-module quiet zone) with the name
//! and position printed under it. The PNG is that SVG rasterised by `resvg` at twice its
//! size. Fonts for the PNG: DejaVu Sans is embedded (Latin, Greek, Cyrillic…), and the
//! host's fonts are loaded too — Chinese names need a CJK font on the server (Debian:
//! `fonts-noto-cjk` or `fonts-wqy-microhei`), otherwise they print as empty boxes. The SVG carries
//! the text as text, so browsers print it with their own fonts.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qrcode::{Color, EcLevel, QrCode};
use resvg::usvg;
use uuid::Uuid;

use crate::error::AppError;
use crate::http::AppState;

/// Pixels per QR module in the SVG.
const MODULE_PX: usize = 8;
/// Light modules around the code.
const QUIET: usize = 4;
/// The embedded fallback font.
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The label routes (merged into [`crate::http::router`]).
pub fn routes() -> Router<AppState> {
    Router::new().route("/checkpoints/{id}/qr.svg", get(svg_label)).route("/checkpoints/{id}/qr.png", get(png_label))
}

async fn svg_label(state: State<AppState>, headers: HeaderMap, id: Path<String>) -> Response {
    label(state, headers, id, Format::Svg).await
}

async fn png_label(state: State<AppState>, headers: HeaderMap, id: Path<String>) -> Response {
    label(state, headers, id, Format::Png).await
}

#[derive(Clone, Copy)]
enum Format {
    Svg,
    Png,
}

async fn label(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, format: Format) -> Response {
    let auth = state.services.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).await;
    let who = match auth.principal() {
        Ok(who) => who,
        Err(e) => {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], e.to_string()).into_response();
        }
    };
    let Ok(id) = id.parse::<Uuid>() else { return not_found() };
    let checkpoint = match state.services.checkpoint(who, id).await {
        Ok(c) => c,
        Err(AppError::NotFound(_)) | Err(AppError::Forbidden(_)) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "could not load a checkpoint for its label");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
    };
    let svg = match label_svg(&state.services.qr_payload(&checkpoint), &checkpoint.name, checkpoint.position.as_deref())
    {
        Ok(svg) => svg,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let disposition = |ext: &str| format!("inline; filename=\"checkpoint-{id}.{ext}\"");
    match format {
        Format::Svg => (
            [(header::CONTENT_TYPE, "image/svg+xml".to_owned()), (header::CONTENT_DISPOSITION, disposition("svg"))],
            svg,
        )
            .into_response(),
        Format::Png => match tokio::task::spawn_blocking(move || render_png(&svg)).await {
            Ok(Ok(png)) => (
                [(header::CONTENT_TYPE, "image/png".to_owned()), (header::CONTENT_DISPOSITION, disposition("png"))],
                png,
            )
                .into_response(),
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
    }
}

/// Space under the last line of text.
fn px_pad() -> f32 {
    (MODULE_PX * 2) as f32
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such checkpoint").into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A font size (px) at which `text` fits `width` px: a wide (CJK) character takes about an
/// em, others about 0.6 em.
fn fitting_size(text: &str, width: usize, max: f32) -> f32 {
    let ems: f32 = text.chars().map(|c| if (c as u32) >= 0x1100 { 1.0 } else { 0.6 }).sum();
    if ems <= 0.0 { max } else { (width as f32 / ems).clamp(6.0, max) }
}

/// The label: the QR code of `payload` with `name` and `position` under it.
pub fn label_svg(payload: &str, name: &str, position: Option<&str>) -> Result<String, String> {
    let code = QrCode::with_error_correction_level(payload, EcLevel::M).map_err(|e| e.to_string())?;
    let modules = code.width();
    let size = (modules + 2 * QUIET) * MODULE_PX;
    let mut path = String::new();
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (x, y) = (i % modules + QUIET, i / modules + QUIET);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    let text_width = size - 2 * MODULE_PX;
    let name_px = fitting_size(name, text_width, 22.0);
    let mut text = format!(
        r#"<text x="{x}" y="{y:.1}" font-size="{name_px:.1}" font-weight="bold">{}</text>"#,
        escape(name),
        x = size / 2,
        y = size as f32 + name_px * 0.6
    );
    let mut bottom = size as f32 + name_px * 0.9;
    if let Some(position) = position {
        let px = fitting_size(position, text_width, 16.0);
        bottom += px * 1.3;
        text.push_str(&format!(
            r#"<text x="{x}" y="{bottom:.1}" font-size="{px:.1}">{}</text>"#,
            escape(position),
            x = size / 2
        ));
    }
    let height = (bottom + px_pad()).ceil() as usize;
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{height}" viewBox="0 0 {size} {height}"><rect width="100%" height="100%" fill="#fff"/><path transform="scale({MODULE_PX})" shape-rendering="crispEdges" fill="#000" d="{path}"/><g font-family="DejaVu Sans, Noto Sans CJK SC, WenQuanYi Micro Hei, sans-serif" text-anchor="middle" fill="#000">{text}</g></svg>"##
    ))
}

/// The fonts for rasterising labels: the embedded one and the host's (loaded once).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_font_data(DEJAVU_SANS.to_vec());
            db.load_system_fonts();
            db.set_sans_serif_family("DejaVu Sans");
            Arc::new(db)
        })
        .clone()
}

/// The label SVG as a PNG at twice its size.
pub fn render_png(svg: &str) -> Result<Vec<u8>, String> {
    let options = usvg::Options { fontdb: fonts(), font_family: "DejaVu Sans".into(), ..usvg::Options::default() };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width() * 2, size.height() * 2)
        .ok_or_else(|| "the label has no size".to_owned())?;
    resvg::render(&tree, resvg::tiny_skia::Transform::from_scale(2.0, 2.0), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_has_text_and_renders() {
        let svg =
            label_svg("SWQ1.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBB", "配电室 <A&B>", Some("B1")).unwrap_or_default();
        assert!(svg.contains("配电室 &lt;A&amp;B&gt;"), "{svg}");
        let png = render_png(&svg).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    }
}
