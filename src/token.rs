//! The SAS token tool (Device Explorer's feature): a token for the form's device, valid for the chosen lifetime,
//! to copy into another tool. Pure: the time comes in as an argument.

use crate::form::plan;
use crate::settings::Settings;

/// A token for the current form, valid for the chosen lifetime from `now_unix`, and its expiry.
pub fn sas_token(s: &Settings, now_unix: u64) -> Result<(String, u64), String> {
    let p = plan(s, None).map_err(|e| crate::form::joined("", "; ", e.iter().map(|e| e.message.as_str())))?;
    match p.cs.password(now_unix + s.token_ttl_secs as u64) {
        Some(t) => Ok((t.to_string(), t.expiry())),
        None => Err("no token for X.509".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MAX_TTL_SECS;

    #[test]
    fn a_token_is_signed_for_the_form_within_the_lifetime_cap() {
        let mut s = Settings {
            connection_string: "HostName=myhub.azure-devices.net;DeviceId=plc;SharedAccessKey=a2V5IGZvciB0ZXN0cw=="
                .into(),
            token_ttl_secs: MAX_TTL_SECS + 1,
            ..Default::default()
        };
        assert!(sas_token(&s, 1_700_000_000).unwrap_err().contains("must be from 10 to 86400"));
        s.token_ttl_secs = MAX_TTL_SECS;
        let (token, expiry) = sas_token(&s, 1_700_000_000).unwrap();
        assert_eq!(expiry, 1_700_000_000 + 86_400);
        assert!(token.contains(" sr=myhub.azure-devices.net%2Fdevices%2Fplc&sig="), "{token}");
    }
}
