//! wasm-bindgen tests of the app, run in headless Chromium by `cargo xtask test`.
#![cfg(target_arch = "wasm32")]

use hubsim_proto::sas::{DeviceKey, ResourceUri, SasToken};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn sas_token_is_computed_in_the_browser() {
    let key = DeviceKey::from_base64_lenient("key").unwrap();
    let t = SasToken::sign(&key, &ResourceUri::Device { host: "host".into(), device_id: "device".into() }, 12345, None);
    assert_eq!(t.to_string(), "SharedAccessSignature sr=host%2Fdevices%2Fdevice&sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345");
}
