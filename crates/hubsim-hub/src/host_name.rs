//! The emulator's host name (`--host-name`) is checked before anything is generated from it: it goes into every
//! connection string and SAS audience, and into the generated CA's name constraints and the server certificate,
//! so a name no client can dial (`bad host`) would otherwise give a CA for nothing.

use std::net::{Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// Why a host name was refused; the message names it and says what a valid one is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the host name '{name}' (--host-name) is not a valid DNS name or IP address: {reason}")]
pub struct HostNameError {
    /// The name as given (control characters escaped, cut to 300 bytes).
    pub name: String,
    pub reason: String,
}

/// Longest DNS name (RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written without the final dot).
pub const MAX_HOST_NAME: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// Checks that `name` is a host name clients can dial and a certificate can name: an IPv4 literal
/// (`127.0.0.1`), or a DNS name of RFC 1123 labels (letters, digits and hyphens, 1–63
/// characters each, not starting or ending with a hyphen, separated by dots, at most 253 characters in all,
/// whose last label is not all digits, RFC 3696 §2). Case is free. Errors: [`HostNameError`] naming the first
/// rule broken (a port, a space, an empty or long label…). An IPv6 literal is refused: IoT Hub connection strings
/// and SAS audiences write `HostName` bare, where its colons would read as a port (`HostName=::1` cannot be told
/// from a name with a port), and the HTTP `Host` header writes it in brackets.
pub fn check_host_name(name: &str) -> Result<(), HostNameError> {
    if name.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let refuse = |reason: String| Err(HostNameError { name: crate::hub::truncate(name, 300), reason });
    if name.is_empty() {
        return refuse("it is empty".into());
    }
    let inner = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    if inner.parse::<Ipv6Addr>().is_ok() {
        return refuse(
            "an IPv6 address cannot be the hub's host name (connection strings write HostName without brackets, \
             where its colons read as a port): use a DNS name such as localhost, or an IPv4 address"
                .into(),
        );
    }
    if let Some((scheme, _)) = name.split_once("://") {
        return refuse(format!("give the name alone, without '{scheme}://' or a path"));
    }
    if let Some((host, port)) = name.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') {
            return refuse(format!(
                "a host name has no port ('{port}'); the ports are --mqtt-port, --ws-port and --http-port"
            ));
        }
    }
    if name.len() > MAX_HOST_NAME {
        return refuse(format!("it is {} characters long; a DNS name has at most {MAX_HOST_NAME}", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return refuse("it has an empty label (two dots in a row, or a dot at the start or end)".into());
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return refuse(format!("a DNS label takes letters, digits and hyphens, not {c:?}"));
        }
        if label.len() > MAX_LABEL {
            return refuse(format!("the label '{label}' is {} characters long; at most {MAX_LABEL}", label.len()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse(format!("the label '{label}' starts or ends with a hyphen"));
        }
    }
    if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return refuse("its last label is all digits, and it is not an IPv4 address".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_and_ip_literals_are_accepted() {
        let long_label = "a".repeat(MAX_LABEL);
        let longest =
            [&"b".repeat(61), &"c".repeat(63), &"d".repeat(63), &"e".repeat(63)].map(|s| s.as_str()).join(".");
        assert_eq!(longest.len(), MAX_HOST_NAME);
        for ok in [
            "localhost",
            "LocalHost",
            "my-hub.azure-devices.net",
            "hub1.local",
            "x",
            "0ne.example",
            "127.0.0.1",
            long_label.as_str(),
            longest.as_str(),
        ] {
            assert_eq!(check_host_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_rule_it_breaks() {
        let too_long = ["a"; 128].join(".");
        let long_label = "a".repeat(MAX_LABEL + 1);
        for (bad, says) in [
            ("bad host", "not ' '"),
            ("", "empty"),
            ("hub_1.local", "not '_'"),
            ("hub..local", "empty label"),
            (".hub", "empty label"),
            ("hub.", "empty label"),
            ("-hub.local", "hyphen"),
            ("hub-.local", "hyphen"),
            ("localhost:28443", "no port"),
            ("[::1]", "IPv6"),
            ("::1", "IPv6"),
            ("2001:db8::8a2e:370:7334", "IPv6"),
            ("https://myhub.local", "without 'https://'"),
            ("1.2.3", "all digits"),
            ("256.0.0.1", "all digits"),
            ("hüb.local", "not 'ü'"),
            ("evil.example/x", "not '/'"),
            ("a\nb", "not '\\n'"),
            (too_long.as_str(), "at most 253"),
            (long_label.as_str(), "at most 63"),
        ] {
            let e = check_host_name(bad).expect_err(bad);
            assert!(e.reason.contains(says), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "control characters are escaped: {e}");
        }
        assert_eq!(
            check_host_name("bad host").unwrap_err().to_string(),
            "the host name 'bad host' (--host-name) is not a valid DNS name or IP address: a DNS label takes letters, \
             digits and hyphens, not ' '"
        );
    }
}
