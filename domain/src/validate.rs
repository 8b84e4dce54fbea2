//! Field validation. Every check names the field it failed on so that the API can return
//! `extensions.field` and a form can highlight the right box.

use std::fmt;

/// A value that breaks a rule; `field` uses the API's camelCase input names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The input field, e.g. `leakMa` or `address`.
    pub field: String,
    /// What is wrong and what would be right, for a person to read.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self { field: field.into(), reason: reason.to_string() }
    }
}

/// Result of a validation.
pub type Checked<T> = Result<T, ValidationError>;

/// A required, trimmed, non-empty text of at most `max` characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Checked<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    optional_text(field, Some(trimmed), max).map(|v| v.unwrap_or_default())
}

/// An optional text of at most `max` characters; blank becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Checked<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > max => {
            Err(ValidationError::new(field, format!("must be at most {max} characters")))
        }
        Some(v) if v.chars().any(char::is_control) => {
            Err(ValidationError::new(field, "must not contain control characters"))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// What an action of a lifecycle (hazard, work order) takes as input: the text box and the
/// photos, with the API's field names and limits. The server checks an action's input with
/// [`Needs::check`]; the apps read the same value to build the form, so the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The text input's API name (`note`, `report`, `reason`), if the action takes one.
    pub text_field: Option<&'static str>,
    /// Whether the text must be given (not blank).
    pub text_required: bool,
    /// What to say when a required text is blank.
    pub when_blank: &'static str,
    /// Longest text, characters.
    pub max_text_chars: usize,
    /// The photos input's API name (`attachmentIds`, `photos`), if the action takes photos.
    pub photos_field: Option<&'static str>,
    /// Fewest photos.
    pub min_photos: usize,
    /// What to say when there are too few photos.
    pub when_no_photos: &'static str,
    /// Most photos.
    pub max_photos: usize,
}

impl Needs {
    /// Nothing but an optional note of at most `max` characters.
    pub const fn optional_note(max: usize) -> Needs {
        Needs {
            text_field: Some("note"),
            text_required: false,
            when_blank: "",
            max_text_chars: max,
            photos_field: None,
            min_photos: 0,
            when_no_photos: "",
            max_photos: 0,
        }
    }

    /// Checks a text and a photo count against these needs; returns the text, trimmed
    /// (`None` when blank).
    pub fn check(&self, text: Option<&str>, photos: usize) -> Checked<Option<String>> {
        let text = match self.text_field {
            Some(field) => {
                if self.text_required && text.is_none_or(|t| t.trim().is_empty()) {
                    return Err(ValidationError::new(field, self.when_blank));
                }
                optional_text(field, text, self.max_text_chars)?
            }
            None => None,
        };
        if let Some(field) = self.photos_field {
            if photos < self.min_photos {
                return Err(ValidationError::new(field, self.when_no_photos));
            }
            if photos > self.max_photos {
                return Err(ValidationError::new(field, format!("at most {} photos are accepted", self.max_photos)));
            }
        }
        Ok(text)
    }
}

/// A device serial as the device protocol defines it: 1–64 of `A–Z a–z 0–9 - _`.
pub fn device_serial(field: &str, value: &str) -> Checked<String> {
    let v = value.trim();
    let valid_chars = v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if v.is_empty() || v.len() > 64 || !valid_chars {
        return Err(ValidationError::new(field, "must be 1–64 characters of A–Z, a–z, 0–9, '-' and '_'"));
    }
    Ok(v.to_owned())
}

/// A detector's bus address (Modbus unit id): 1–247.
pub fn detector_address(field: &str, value: i64) -> Checked<u8> {
    match u8::try_from(value) {
        Ok(a) if (1..=247).contains(&a) => Ok(a),
        _ => Err(ValidationError::new(field, "must be a bus address from 1 to 247")),
    }
}

/// An integer within an inclusive range.
pub fn int_in(field: &str, value: i64, min: i64, max: i64) -> Checked<i64> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::new(field, format!("must be between {min} and {max}")))
    }
}

/// A finite number within an inclusive range.
pub fn number_in(field: &str, value: f64, min: f64, max: f64, unit: &str) -> Checked<f64> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::new(field, format!("must be between {min} and {max} {unit}").trim_end().to_owned()))
    }
}

/// An e-mail address used to sign in (normalised to lower case).
pub fn email(field: &str, value: &str) -> Checked<String> {
    let v = value.trim().to_lowercase();
    let ok = v.len() <= 254
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(v) } else { Err(ValidationError::new(field, "must be an e-mail address like name@example.com")) }
}

/// A phone number: an optional leading `+`, then 5–20 digits (spaces and dashes are removed).
pub fn phone(field: &str, value: &str) -> Checked<String> {
    let v: String = value.trim().chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = v.strip_prefix('+').unwrap_or(&v);
    if (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(v)
    } else {
        Err(ValidationError::new(field, "must be a phone number of 5–20 digits, optionally starting with +"))
    }
}

/// A new password: 8–128 characters, not only letters or only digits.
pub fn new_password(field: &str, value: &str) -> Checked<()> {
    let len = value.chars().count();
    if !(8..=128).contains(&len) {
        return Err(ValidationError::new(field, "must be 8–128 characters long"));
    }
    if value.chars().all(char::is_alphabetic) || value.chars().all(|c| c.is_ascii_digit()) {
        return Err(ValidationError::new(field, "must mix letters with digits or symbols"));
    }
    Ok(())
}

/// A locale tag the apps can render; `zh-CN` and `en` are supported today.
pub fn locale(field: &str, value: &str) -> Checked<String> {
    match value.trim() {
        "zh-CN" | "zh" => Ok("zh-CN".to_owned()),
        "en" | "en-US" | "en-GB" => Ok("en".to_owned()),
        _ => Err(ValidationError::new(field, "must be zh-CN or en")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_follow_the_device_protocol() {
        let cases = [
            ("SW-0001_a", true),
            ("", false),
            ("has space", false),
            ("sw/1", false),
            ("+", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (serial, ok) in cases {
            assert_eq!(device_serial("serial", serial).is_ok(), ok, "{serial:?}");
        }
    }

    #[test]
    fn addresses_are_modbus_unit_ids() {
        for (addr, ok) in [(0, false), (1, true), (247, true), (248, false), (-1, false), (70000, false)] {
            assert_eq!(detector_address("address", addr).is_ok(), ok, "{addr}");
        }
    }

    #[test]
    fn numbers_reject_nan_and_out_of_range() {
        assert!(number_in("x", f64::NAN, 0.0, 1.0, "").is_err());
        assert!(number_in("x", f64::INFINITY, 0.0, 1e9, "").is_err());
        assert_eq!(number_in("x", 1.0, 0.0, 1.0, "mA"), Ok(1.0));
        let err = number_in("leakMa", 5.0, 20.0, 1000.0, "mA").unwrap_err();
        assert_eq!(err.field, "leakMa");
        assert_eq!(err.reason, "must be between 20 and 1000 mA");
    }

    #[test]
    fn logins_and_passwords() {
        assert_eq!(email("email", " Admin@Demo.Local ").as_deref(), Ok("admin@demo.local"));
        for bad in ["", "a@b", "@b.c", "a b@c.d", "a@.c"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        assert_eq!(phone("phone", "+86 139-1234-5678").as_deref(), Ok("+8613912345678"));
        assert!(phone("phone", "12ab").is_err());
        assert!(new_password("password", "short1").is_err());
        assert!(new_password("password", "onlyletters").is_err());
        assert!(new_password("password", "12345678").is_err());
        assert!(new_password("password", "sparkwatch-demo").is_ok());
    }

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  Mall  ", 10).as_deref(), Ok("Mall"));
        assert!(required_text("name", "   ", 10).is_err());
        assert!(required_text("name", "abcdefghijk", 10).is_err());
        assert_eq!(optional_text("region", Some(" "), 10), Ok(None));
        assert!(optional_text("region", Some("a\u{7}b"), 10).is_err());
    }
}
