//! Where a device connects: IoT Hub's ports, the WebSocket path and subprotocol, and the WebSocket URL the SDKs
//! open (reference §1: MQTT over TLS on 8883; MQTT over WebSocket on 443 at `/$iothub/websocket` with subprotocol
//! `mqtt`, a handshake without either is refused with HTTP 400; `?iothub-no-client-cert=true` tells the hub not
//! to ask for a TLS client certificate, which a browser would otherwise answer with a certificate prompt).

/// MQTT over TLS (reference §1).
pub const MQTT_TLS_PORT: u16 = 8883;
/// MQTT over WebSocket over TLS (reference §1).
pub const WEBSOCKET_PORT: u16 = 443;
/// The WebSocket path of IoT Hub and DPS (reference §1).
pub const WEBSOCKET_PATH: &str = "/$iothub/websocket";
/// The WebSocket subprotocol (RFC 6455 `Sec-WebSocket-Protocol`; reference §1).
pub const WEBSOCKET_SUBPROTOCOL: &str = "mqtt";
/// The query that keeps the hub from requesting a TLS client certificate (reference §1, the Java and Embedded C
/// SDKs and browser clients send it for SAS authentication).
pub const NO_CLIENT_CERT_QUERY: &str = "iothub-no-client-cert=true";

/// `wss://{host}[:{port}]/$iothub/websocket?iothub-no-client-cert=true`; the port is left out when it is 443 or
/// `None`. `host` is a DNS name or address as it appears in a connection string's HostName/GatewayHostName.
pub fn websocket_url(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != WEBSOCKET_PORT => format!("wss://{host}:{p}{WEBSOCKET_PATH}?{NO_CLIENT_CERT_QUERY}"),
        _ => format!("wss://{host}{WEBSOCKET_PATH}?{NO_CLIENT_CERT_QUERY}"),
    }
}

/// Whether an HTTP request path (query already removed) is the MQTT WebSocket endpoint.
pub fn is_websocket_path(path: &str) -> bool {
    path == WEBSOCKET_PATH
}

/// Whether a `Sec-WebSocket-Protocol` header value offers `mqtt` (a comma-separated list, case-insensitive).
pub fn offers_mqtt_subprotocol(header: &str) -> bool {
    header.split(',').any(|p| p.trim().eq_ignore_ascii_case(WEBSOCKET_SUBPROTOCOL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_leaves_out_the_default_port() {
        assert_eq!(
            websocket_url("h.azure-devices.net", None),
            "wss://h.azure-devices.net/$iothub/websocket?iothub-no-client-cert=true"
        );
        assert_eq!(websocket_url("h", Some(443)), "wss://h/$iothub/websocket?iothub-no-client-cert=true");
        assert_eq!(
            websocket_url("localhost", Some(18443)),
            "wss://localhost:18443/$iothub/websocket?iothub-no-client-cert=true"
        );
    }

    #[test]
    fn subprotocol_lists() {
        assert!(offers_mqtt_subprotocol("mqtt"));
        assert!(offers_mqtt_subprotocol("wamp, MQTT"));
        assert!(!offers_mqtt_subprotocol("mqttv3.1"));
        assert!(!offers_mqtt_subprotocol(""));
    }
}
