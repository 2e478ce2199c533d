//! `cargo xtask bench`: every figure of BENCHMARKS.md, each measured beside the tool a user would pick instead,
//! in one run on this machine. Writes `BENCHMARKS.md` and `target/bench/results.json`. Not part of the tests.

use crate::emulator::{self, Emulator};
use crate::util::{output, root, run as sh, step, tool, trunk_release, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MQTT_JS: &str = "mqtt@5.16.0";
const PAHO: &str = "paho-mqtt@1.1.0";

/// mqtt.js's browser build, as the bundle row installs it under `target/bench/npm`.
fn mqtt_js_build(dir: &Path) -> PathBuf {
    dir.join("npm/node_modules/mqtt/dist/mqtt.min.js")
}

/// (user+system CPU seconds, current RSS KiB, peak RSS KiB) of a process.
fn proc_stats(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks / 100.0, kib("VmRSS:"), kib("VmHWM:"))
}

/// Runs `hubsim simulate` and returns its JSON summary with the CPU and memory of `server_pid` during the run.
fn simulate(bin: &Path, args: &[String], server_pid: u32) -> Result<(String, f64, u64)> {
    let (cpu0, _, _) = proc_stats(server_pid);
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("simulate")
        .args(args)
        .arg("--quiet")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let (cpu1, _, peak) = proc_stats(server_pid);
    if !out.status.success() {
        return Err(format!("simulate failed: {}", String::from_utf8_lossy(&out.stdout)));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), (cpu1 - cpu0) / secs * 100.0, peak))
}

/// Connects `n` idle devices and returns (connected, server RSS growth per connection in KiB).
fn idle(bin: &Path, args: &[String], n: usize, server_pid: u32) -> Result<(usize, f64)> {
    let (_, before, _) = proc_stats(server_pid);
    let mut child = Command::new(bin)
        .arg("simulate")
        .args(args)
        .args(["--rate", "0.001", "--duration", "320"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let start = Instant::now();
    let mut best = 0usize;
    let mut stable = 0;
    for line in lines.map_while(std::result::Result::ok) {
        if let Some(c) =
            line.strip_prefix("connected ").and_then(|r| r.split('/').next()).and_then(|c| c.parse::<usize>().ok())
        {
            stable = if c == best { stable + 1 } else { 0 };
            best = best.max(c);
            if c >= n || stable >= 20 || start.elapsed() > Duration::from_secs(300) {
                break;
            }
        }
    }
    // Let the server settle, then sample.
    std::thread::sleep(Duration::from_secs(2));
    let (_, after, _) = proc_stats(server_pid);
    let _ = child.kill();
    let _ = child.wait();
    let per = if best > 0 { (after.saturating_sub(before)) as f64 / best as f64 } else { 0.0 };
    Ok((best, per))
}

/// The connection strings of `{prefix}-0…{count-1}` (created if missing) through the emulator's bulk endpoint.
/// `{prefix}-0 … {prefix}-{count-1}` through the bulk endpoint, 100 per call (IoT Hub's bulk limit).
fn bulk(emu: &Emulator, prefix: &str, count: usize) -> Result<Vec<String>> {
    let mut all = Vec::with_capacity(count);
    while all.len() < count {
        let n = (count - all.len()).min(100);
        let out = output(
            Command::new("curl")
                .args(["-s", "-X", "POST", "-H", "content-type: application/json", "-H"])
                .arg(format!("authorization: {}", emu.token))
                .arg("-d")
                .arg(json!({"prefix": prefix, "start": all.len(), "count": n}).to_string())
                .arg(format!("{}/devices-bulk", emu.http)),
        )
        .ok_or("cannot reach the emulator's bulk endpoint")?;
        let page: Vec<String> = serde_json::from_str(&out).map_err(|e| format!("bulk endpoint: {e}: {out}"))?;
        all.extend(page);
    }
    Ok(all)
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// Bundle sizes of the release web app and of the two MQTT clients beside it.
fn bundle(dir: &Path) -> Result<Value> {
    step("bundle size: the web app vs mqtt.js and paho-mqtt browser builds");
    sh(&mut trunk_release())?;
    let mut bundle = Vec::new();
    let (mut total_raw, mut total_gz) = (0, 0);
    for e in std::fs::read_dir(root().join("dist")).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let (raw, z) = crate::util::gzip_size(&p)?;
        total_raw += raw;
        total_gz += z;
        bundle.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), raw, z));
    }
    bundle.sort();
    let npm = dir.join("npm");
    if !mqtt_js_build(dir).exists() || !npm.join("node_modules/paho-mqtt").exists() {
        std::fs::create_dir_all(&npm).map_err(|e| e.to_string())?;
        sh(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&npm)
            .args([MQTT_JS, PAHO]))?;
    }
    let (mq_raw, mq_gz) = crate::util::gzip_size(&mqtt_js_build(dir))?;
    let (paho_raw, paho_gz) = crate::util::gzip_size(&npm.join("node_modules/paho-mqtt/paho-mqtt-min.js"))?;
    Ok(json!({
        "files": bundle.iter().map(|(n, r, z)| json!({"name": n, "raw": r, "gzip": z})).collect::<Vec<_>>(),
        "totalRaw": total_raw, "totalGzip": total_gz,
        "mqttJs": {"version": MQTT_JS, "raw": mq_raw, "gzip": mq_gz},
        "pahoMqtt": {"version": PAHO, "raw": paho_raw, "gzip": paho_gz},
    }))
}

/// One load row: the same `hubsim simulate` load against the emulator and against mosquitto, one after the other.
struct Pair<'a> {
    bin: &'a Path,
    emu: &'a Emulator,
    mosq: &'a Mosquitto,
    dir: &'a Path,
    ca: PathBuf,
}

impl Pair<'_> {
    /// `devices` devices (prefix `prefix`) sending `load`; returns the JSON of both sides.
    fn run(&self, prefix: &str, devices: usize, load: &[&str]) -> Result<Value> {
        let load: Vec<String> = load.iter().map(|s| s.to_string()).collect();
        let mut hub_args: Vec<String> = vec![
            "--hub".into(),
            self.emu.http.clone(),
            "--login".into(),
            self.emu.service_connection_string.clone(),
            "--devices".into(),
            devices.to_string(),
            "--prefix".into(),
            prefix.into(),
        ];
        hub_args.extend(load.iter().cloned());
        let (hub_sum, hub_cpu, _) = simulate(self.bin, &hub_args, self.emu.pid())?;
        eprintln!("{hub_sum}");
        let hub_rss = proc_stats(self.emu.pid()).2;
        let css = bulk(self.emu, prefix, devices)?;
        let cs_file = self.dir.join(format!("{prefix}.txt"));
        std::fs::write(&cs_file, css.join("\n")).map_err(|e| e.to_string())?;
        let mut margs = self.mosquitto_args(&cs_file);
        margs.extend(load);
        let (mosq_sum, mosq_cpu, mosq_rss) = simulate(self.bin, &margs, self.mosq.pid())?;
        eprintln!("{mosq_sum}");
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
        Ok(json!({
            "devices": devices, "load": load_text(&hub_args),
            "hubsim": parse(&hub_sum), "hubsimCpuPercent": hub_cpu, "hubsimPeakRssKiB": hub_rss,
            "mosquitto": parse(&mosq_sum), "mosquittoCpuPercent": mosq_cpu, "mosquittoPeakRssKiB": mosq_rss,
        }))
    }

    fn mosquitto_args(&self, cs_file: &Path) -> Vec<String> {
        vec![
            "--host".into(),
            "localhost".into(),
            "--mqtt-port".into(),
            self.mosq.port.to_string(),
            "--ca".into(),
            self.ca.display().to_string(),
            "--connection-strings".into(),
            cs_file.display().to_string(),
        ]
    }
}

fn load_text(args: &[String]) -> String {
    let v = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned().unwrap_or_default();
    format!("rate {}/s per device, {} s, QoS {}, {} B", v("--rate"), v("--duration"), v("--qos"), v("--size"))
}

/// The emulator rows: throughput flat out, PUBACK latency at a fixed rate, many devices, idle connections.
fn emulator_rows(bin: &Path, dir: &Path, idle_n: usize) -> Result<Value> {
    step("start the release emulator");
    let data = dir.join("emulator");
    let _ = std::fs::remove_dir_all(&data);
    let emu = Emulator::start(bin, &data, &["--mqtt-port", "0", "--ws-port", "0", "--http-port", "0"])?;
    let (_, rss_start, _) = proc_stats(emu.pid());
    let mosq = Mosquitto::start(dir, &data)?;
    let pair = Pair { bin, emu: &emu, mosq: &mosq, dir, ca: data.join("ca.pem") };

    step("emulator throughput: 100 devices at QoS 1 as fast as possible, hubsim emulator vs mosquitto (TLS)");
    let flat = pair.run("load", 100, &["--rate", "0", "--duration", "15", "--size", "256", "--qos", "1"])?;
    step("PUBACK latency at 10 000 msgs/s: 100 devices × 100 msgs/s");
    let paced = pair.run("paced", 100, &["--rate", "100", "--duration", "15", "--size", "256", "--qos", "1"])?;
    step("many devices: 1 000 devices × 10 msgs/s");
    let many = pair.run("many", 1000, &["--rate", "10", "--duration", "20", "--size", "256", "--qos", "1"])?;

    step(&format!("idle connections: {idle_n} devices, memory per connection"));
    let idle_hub = idle(
        bin,
        &[
            "--hub".into(),
            emu.http.clone(),
            "--login".into(),
            emu.service_connection_string.clone(),
            "--devices".into(),
            idle_n.to_string(),
            "--prefix".into(),
            "idle".into(),
        ],
        idle_n,
        emu.pid(),
    )?;
    let idle_css = bulk(&emu, "idle", idle_n)?;
    let idle_file = dir.join("idle.txt");
    std::fs::write(&idle_file, idle_css.join("\n")).map_err(|e| e.to_string())?;
    let idle_mosq = idle(bin, &pair.mosquitto_args(&idle_file), idle_n, mosq.pid())?;
    let (_, rss_end, rss_peak) = proc_stats(emu.pid());
    drop(mosq);
    Ok(json!({
        "emulatorThroughput": flat,
        "emulatorPaced": paced,
        "emulatorMany": many,
        "idle": {
            "devices": idle_n,
            "hubsimConnected": idle_hub.0, "hubsimKiBPerConnection": idle_hub.1,
            "mosquittoConnected": idle_mosq.0, "mosquittoKiBPerConnection": idle_mosq.1,
            "fdLimit": output(Command::new("sh").arg("-c").arg("ulimit -n")).and_then(|v| v.trim().parse::<u64>().ok()),
        },
        "emulatorRssKiB": {"start": rss_start, "end": rss_end, "peak": rss_peak},
    }))
}

/// Writes `floor.html` and `floor.js` beside the built app: the app's header and connect form as static HTML with
/// the app's stylesheet, and the least script that can connect from it (on submit: a WebSocket to the hub in the
/// page's fragment, `#ws=…&id=…&pw=…`, a hand-built MQTT CONNECT with the token given there, no signing, and the
/// status set to "Connected" on a CONNACK that accepts). The time-to-connected row measures it the same way as the
/// app: what the browser alone needs on this machine to paint such a form and to connect from it, in a new context
/// (the floor under the app's "form ready" and "click → Connected", and under any page that would meet the goal).
fn write_floor_page(dist: &Path) -> Result {
    let css = std::fs::read_dir(dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|n| n.starts_with("app-") && n.ends_with(".css"))
        .ok_or("no app-*.css in the built app")?;
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hubsim floor</title>\
         <link rel=\"stylesheet\" href=\"./{css}\"><script src=\"./floor.js\" defer></script></head><body><div class=\"app\"><header class=\"top\">\
         <div class=\"title\"><h1>hubsim</h1></div><div class=\"statusbar\"><div class=\"status\" role=\"status\">\
         Disconnected</div></div></header><main><div class=\"columns\"><div class=\"col\"><section class=\"panel \
         connect\"><h2>Connect</h2><form><label for=\"cs\">Connection string</label><textarea id=\"cs\"></textarea>\
         <button type=\"submit\" class=\"primary\">Connect</button></form></section></div></div></main></div>\
         </body></html>\n"
    );
    // MQTT 3.1.1 CONNECT (§3.1): protocol "MQTT" level 4, flags username + password + clean session, keep-alive 60 s.
    let script = "const p = new URLSearchParams(location.hash.slice(1));\n\
        const utf8 = (s) => { const b = new TextEncoder().encode(s); return [b.length >> 8, b.length & 255, ...b]; };\n\
        document.querySelector('form').addEventListener('submit', (e) => {\n  \
        e.preventDefault();\n  \
        const id = p.get('id');\n  \
        const body = [0, 4, 77, 81, 84, 84, 4, 0xc2, 0, 60, ...utf8(id), ...utf8(`localhost/${id}/?api-version=2021-04-12`), ...utf8(p.get('pw'))];\n  \
        const len = []; let n = body.length;\n  \
        do { len.push((n % 128) | (n >= 128 ? 128 : 0)); n = Math.floor(n / 128); } while (n > 0);\n  \
        const ws = new WebSocket(p.get('ws'), 'mqtt');\n  \
        ws.binaryType = 'arraybuffer';\n  \
        ws.onopen = () => ws.send(new Uint8Array([0x10, ...len, ...body]));\n  \
        ws.onmessage = (m) => {\n    \
        const b = new Uint8Array(m.data);\n    \
        if (b[0] === 0x20 && b[3] === 0) document.querySelector('[role=status]').textContent = 'Connected';\n    \
        else { window.__error = 'not accepted: ' + Array.from(b).join(' '); console.debug('ttc:error'); }\n    \
        ws.close();\n  \
        };\n  \
        ws.onerror = () => { window.__error = 'WebSocket error'; console.debug('ttc:error'); };\n\
        });\n";
    std::fs::write(dist.join("floor.js"), script).map_err(|e| e.to_string())?;
    std::fs::write(dist.join("floor.html"), html).map_err(|e| e.to_string())
}

/// Writes `mqttjs.html` (+ its script and mqtt.js's browser build) beside the built app: a page that only
/// connects mqtt.js to the hub given in its fragment (`#ws=…&id=…&pw=…`) and notes when CONNACK arrived, the peer
/// of the time-to-connected row. (Debian's mosquitto here has no WebSocket listener, so mqtt.js talks to this
/// emulator, like the throughput row.) Nothing is written when mqtt.js was not installed by the bundle row.
fn write_mqtt_js_page(dist: &Path, mqtt_js: &Path) -> Result {
    if !mqtt_js.exists() {
        return Ok(());
    }
    std::fs::copy(mqtt_js, dist.join("mqtt.min.js")).map_err(|e| format!("{}: {e}", mqtt_js.display()))?;
    let script = "const p = new URLSearchParams(location.hash.slice(1));\n\
        const id = p.get('id');\n\
        const c = mqtt.connect(p.get('ws'), { clientId: id, username: `localhost/${id}/?api-version=2021-04-12`,\n  \
        password: p.get('pw'), protocolVersion: 4, clean: true, keepalive: 60, reconnectPeriod: 0 });\n\
        c.on('connect', () => { window.__connack = performance.now(); console.debug('ttc:connack'); c.end(true); });\n\
        c.on('error', (e) => { window.__error = String(e); console.debug('ttc:error'); });\n";
    std::fs::write(dist.join("mqttjs-connect.js"), script).map_err(|e| e.to_string())?;
    let html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mqtt.js connect</title>\
        <script src=\"./mqtt.min.js\"></script><script src=\"./mqttjs-connect.js\"></script></head><body></body></html>\n";
    std::fs::write(dist.join("mqttjs.html"), html).map_err(|e| e.to_string())
}

/// The browser rows (throughput vs mqtt.js, time to connected, devices per tab) against a fresh emulator.
fn browser_rows(bin: &Path, dir: &Path) -> Result<Value> {
    step("browser: throughput vs mqtt.js, time to connected, devices per tab (headless Chromium)");
    // The browser rows need the benchmark entry points, which the shipped app (measured by `bundle`) leaves out.
    step("web app with its benchmark entry points: trunk build --release --features bench");
    let bench_dist = dir.join("dist");
    sh(trunk_release().args(["--features", "bench", "--dist"]).arg(&bench_dist).current_dir(root()))?;
    write_floor_page(&bench_dist)?;
    write_mqtt_js_page(&bench_dist, &mqtt_js_build(dir))?;
    let bench_dist = bench_dist.display().to_string();
    let data = dir.join("emulator-web");
    let _ = std::fs::remove_dir_all(&data);
    let emu = Emulator::start(
        bin,
        &data,
        &["--mqtt-port", "0", "--ws-port", "0", "--http-port", "0", "--web-dir", &bench_dist],
    )?;
    // The script connects mqtt.js as bench-browser-1 (and hubsim as bench-browser-0); mqtt.js gets its token here.
    let browser_devices = bulk(&emu, "bench-browser", 2)?;
    let token = output(Command::new(bin).args(["sas", "--ttl", "3600", "--connection-string", &browser_devices[1]]))
        .ok_or("hubsim sas failed")?;
    let browser = output(
        tool("node")
            .arg(root().join("tests/e2e/bench/browser-bench.js"))
            .current_dir(root().join("tests/e2e"))
            .env("HUBSIM_HTTP", &emu.http)
            .env("HUBSIM_TOKEN", &emu.token)
            .env("MQTT_JS", mqtt_js_build(dir))
            .env("MQTT_JS_TOKEN", token.trim())
            .stderr(Stdio::inherit()),
    )
    .unwrap_or_else(|| "{}".into());
    Ok(serde_json::from_str(&browser).unwrap_or(Value::Null))
}

/// `cargo xtask bench [--only emulator|web] [--idle N] [--report-only]`. With `--only`, the other rows are kept
/// from the last `target/bench/results.json`.
pub fn run(args: &[String]) -> Result {
    let dir = root().join("target/bench");
    if args.iter().any(|a| a == "--report-only") {
        // Re-render BENCHMARKS.md from the last results.json.
        let text = std::fs::read_to_string(dir.join("results.json")).map_err(|e| format!("results.json: {e}"))?;
        let results: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        return std::fs::write(root().join("BENCHMARKS.md"), crate::bench_report::render(&results))
            .map_err(|e| e.to_string());
    }
    let idle_n: usize = arg(args, "--idle").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let (web, emulator_side) = match arg(args, "--only") {
        None => (true, true),
        Some("emulator") => (false, true),
        Some("web") => (true, false),
        Some(other) => return Err(format!("--only {other}: expected `emulator` or `web`")),
    };
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut results: Value = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if web {
        crate::setup::run()?;
        crate::setup::e2e_node_modules()?;
    }
    if emulator_side {
        crate::setup::apt(&["mosquitto"])?;
    }
    // Children inherit a file-descriptor limit large enough for 10 000 connections on each side.
    let _ = Command::new("prlimit").arg(format!("--pid={}", std::process::id())).arg("--nofile=400000:400000").status();
    let bin = emulator::build(true)?;
    if web {
        results["bundle"] = bundle(&dir)?;
    }
    if emulator_side {
        for (k, v) in emulator_rows(&bin, &dir, idle_n)?.as_object().into_iter().flatten() {
            results[k] = v.clone();
        }
    }
    if web {
        results["browser"] = browser_rows(&bin, &dir)?;
    }
    results["date"] =
        output(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC")).unwrap_or_default().trim().into();
    results["machine"] = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        output(Command::new("sh").arg("-c").arg("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"))
            .unwrap_or_default()
            .trim()
    )
    .into();
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), &text).map_err(|e| e.to_string())?;
    std::fs::write(root().join("BENCHMARKS.md"), crate::bench_report::render(&results)).map_err(|e| e.to_string())?;
    eprintln!("\nwrote BENCHMARKS.md and target/bench/results.json");
    Ok(())
}

/// Debian's mosquitto with a TLS listener using the emulator's certificate.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &Path, emu_data: &Path) -> Result<Mosquitto> {
        let port = 28884;
        let conf = dir.join("mosquitto.conf");
        let cert: PathBuf = emu_data.join("server.pem");
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nallow_anonymous true\npersistence false\nlog_type none\nmax_queued_messages 100000\nlistener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\nmax_connections -1\n",
                cert.display(),
                emu_data.join("server.key").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("mosquitto: {e}"))?;
        // Wait until it listens.
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("mosquitto did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Mosquitto { child, port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
