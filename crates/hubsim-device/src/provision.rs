//! A device registering with the Device Provisioning Service over a real transport: the one tokio driver of the
//! core's [`ProvisioningSession`] (as [`Driver`](crate::Driver) is for a `DeviceSession`). It owns the clock origin,
//! flushes after every input, re-arms the one timer from `poll_timeout`, and reports progress to the caller.
//! `hubsim provision` and the tests use it, against the emulator's DPS or the real one (same transports, §9).

use hubsim_proto::provisioning::{
    EnrollmentKey, Progress, ProvisioningConfig, ProvisioningError, ProvisioningEvent, ProvisioningSession,
    Registration, StartError,
};
use hubsim_proto::sas::DeviceKey;
use hubsim_proto::Instant;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

use crate::driver::READ_BUFFER;
use crate::transport::{Transport, TransportError, Via};

/// Why a registration gave no answer from DPS, or DPS's refusal.
#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Dps(#[from] ProvisioningError),
}

/// Where and how to register.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `global.azure-devices-provisioning.net`, or the emulator's host name.
    pub host: String,
    pub port: u16,
    pub via: Via,
}

/// Lifetime of the DPS token the session signs.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Opens the transport to `endpoint` and registers: DPS's answer and the device key to connect to the hub with.
pub async fn provision(
    tls: Arc<rustls::ClientConfig>,
    endpoint: &Endpoint,
    config: ProvisioningConfig,
    key: &EnrollmentKey,
    on_progress: impl FnMut(&Progress),
) -> Result<(Registration, DeviceKey), ProvisionError> {
    let mut session = ProvisioningSession::new(config, key);
    let transport = Transport::open(tls, &endpoint.host, endpoint.port, endpoint.via).await?;
    let r = drive(&mut session, transport, on_progress).await?;
    Ok((r, session.device_key().clone()))
}

/// Runs a registration on an open transport until DPS answers (or the registration fails).
pub async fn drive(
    session: &mut ProvisioningSession,
    mut transport: Transport,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Registration, ProvisionError> {
    let start = tokio::time::Instant::now();
    let now = || Instant::from_millis(start.elapsed().as_millis() as u64);
    let expiry =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + TOKEN_LIFETIME.as_secs();
    session.start(now(), expiry)?;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        while let Some(bytes) = session.poll_transmit() {
            if let Err(e) = transport.send(bytes).await {
                session.handle_transport_closed(now(), e.to_string());
            }
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                ProvisioningEvent::Progress(p) => on_progress(&p),
                ProvisioningEvent::Finished(r) => {
                    // The goodbye (DISCONNECT) if the session queued one.
                    while let Some(bytes) = session.poll_transmit() {
                        if transport.send(bytes).await.is_err() {
                            break;
                        }
                    }
                    return Ok(r?);
                }
            }
        }
        let timer = session.poll_timeout().map(|t| start + Duration::from_millis(t.as_millis()));
        tokio::select! {
            r = transport.recv(&mut buf) => match r {
                // A violation finishes the session; the event loop above reports it.
                Some(b) => { let _ = session.handle_input(now(), &b); }
                None => session.handle_transport_closed(now(), "DPS closed the connection"),
            },
            _ = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => session.handle_timeout(now()),
        }
    }
}
