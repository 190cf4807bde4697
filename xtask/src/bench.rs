//! `cargo xtask bench <scenario|all> [--runs N] [--write] [--no-build] [--no-pgo]`: runs the load
//! generator against the broker and the native baseline in the same run, and reports medians
//! (`--write`: writes BENCHMARKS.md, or with one scenario replaces its section alone; `--no-build`:
//! runs what was built before). The broker is the build `cargo xtask dist` ships (`[profile.release]`
//! and profile-guided optimization, `pgo`), and the baseline is built and trained the same way;
//! `--no-pgo` measures both with the release profile alone. The load generator is the release build.
//! Everything runs on 127.0.0.1 and stops by itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use bench::results::{self, CpuTime, Echo, Fanout};
use serde::de::DeserializeOwned;

/// One benchmark: runs against the broker and the baseline, and reports a table.
type Scenario = fn(&Bench) -> Result<Report>;

/// Every scenario by name, in the order `all` runs them: the one list the usage text, the argument
/// check and the run read.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("echo", echo),
    ("dispatch", dispatch),
    ("plugin-cost", plugin_cost),
    ("fanout", fanout),
    ("connections", connections),
    ("reload", reload),
    ("hostile", hostile),
    ("cluster", cluster),
    ("history", history),
];

/// The scenarios that start no server: run alone, they skip the servers' builds (the PGO
/// pipeline's two are 10 minutes here), which they would not use.
const WITHOUT_SERVERS: &[&str] = &["dispatch"];

/// The scenarios' names, for messages.
pub(crate) fn scenario_names() -> String {
    SCENARIOS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// A server under test, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(mut command: Command) -> Result<Server> {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).env("RUST_LOG", "error").spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr =
            line.trim().strip_prefix("listening on ").context("the server did not say where it listens")?.to_owned();
        Ok(Server { child, addr })
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The process id, for the load generator to read the server's CPU time (`bench::cpu_time`).
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// (RSS, PSS) in KiB.
    fn memory_kib(&self) -> Result<(f64, f64)> {
        let path = format!("/proc/{}/smaps_rollup", self.child.id());
        let rollup = std::fs::read_to_string(&path)?;
        let field = |name: &str| -> Result<f64> {
            let line = rollup.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
            let value = line.split_whitespace().nth(1).unwrap_or_default();
            value.parse().with_context(|| format!("{path}: {name} is {value:?}, not a number"))
        };
        Ok((field("Rss:")?, field("Pss:")?))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    root: PathBuf,
    /// The servers' binaries, as `prepare` built them.
    servers: Servers,
    dir: tempdir::Dir,
    runs: usize,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Bench {
    /// A binary of the release build.
    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    fn broker(&self) -> Result<Server> {
        self.broker_with("broker.toml")
    }

    /// A broker serving `config`, a file of the bench folder.
    fn broker_with(&self, config: &str) -> Result<Server> {
        let mut command = Command::new(&self.servers.broker);
        command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(self.dir.0.join(config));
        Server::start(command)
    }

    fn baseline(&self) -> Result<Server> {
        let mut command = Command::new(&self.servers.baseline);
        command.arg("127.0.0.1:0");
        Server::start(command)
    }

    /// Runs `loadgen ARGS` and reads its result, a `T` of `bench::results`.
    fn loadgen<T: DeserializeOwned>(&self, args: &[String]) -> Result<T> {
        let output = Command::new(self.bin("loadgen")).args(args).stderr(Stdio::inherit()).output()?;
        if !output.status.success() {
            bail!("loadgen {args:?} failed: {}", String::from_utf8_lossy(&output.stdout));
        }
        results::last_line(&String::from_utf8(output.stdout)?).with_context(|| format!("loadgen {args:?}"))
    }
}

/// A finished scenario: a markdown table and notes.
struct Report {
    title: String,
    command: String,
    table: Vec<Vec<String>>,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let scenario = args.first().map(String::as_str).unwrap_or("all");
    if matches!(scenario, "help" | "--help" | "-h") {
        println!(
            "usage: cargo xtask bench NAME|all [--runs N] [--write] [--no-build] [--no-pgo]\n\n--no-build: run the binaries and plugins built before\n--no-pgo: the servers built with the release profile alone, without profile-guided optimization\nscenarios: {}",
            scenario_names()
        );
        return Ok(());
    }
    let write = args.iter().any(|a| a == "--write");
    let pgo = !args.iter().any(|a| a == "--no-pgo");
    let runs = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).and_then(|n| n.parse().ok()).context("--runs takes a number")?,
        None => 3,
    };
    ensure!(runs > 0, "--runs must be at least 1");
    let chosen: Vec<_> = match scenario {
        "all" => SCENARIOS.to_vec(),
        one => match SCENARIOS.iter().find(|(name, _)| *name == one) {
            Some(found) => vec![*found],
            None => bail!("unknown scenario {one:?}: one of {} or all", scenario_names()),
        },
    };
    if write && scenario == "all" {
        // Checked before the run, not after its minutes.
        prose_of(root)?;
    }
    // Children inherit the raised hard limit: the servers then hold 100,000 connections too.
    bench::raise_fd_limit();
    let with_servers = chosen.iter().any(|(name, _)| !WITHOUT_SERVERS.contains(name));
    let servers =
        if args.iter().any(|a| a == "--no-build") { servers(root, pgo) } else { prepare(root, pgo, with_servers)? };
    let dir = std::env::temp_dir().join(format!("broker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bench = Bench { root: root.to_owned(), servers, dir: tempdir::Dir(dir), runs };
    write_config(&bench)?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for (name, scenario) in chosen {
        eprintln!("== {name}");
        let report = scenario(&bench)?;
        println!("{}", markdown(&report));
        reports.push(report);
    }
    eprintln!("benchmarks took {:.0} s", started.elapsed().as_secs_f64());
    if write && scenario == "all" {
        write_benchmarks(root, &reports, started.elapsed().as_secs_f64(), runs, pgo)?;
    } else if write {
        // One scenario: its section of BENCHMARKS.md alone is replaced (or added), the rest kept.
        let path = root.join("BENCHMARKS.md");
        let mut text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for report in &reports {
            text = splice(&text, report);
        }
        std::fs::write(&path, text)?;
        eprintln!("updated the section of {scenario} in BENCHMARKS.md");
    }
    Ok(())
}

/// The two servers' binaries.
struct Servers {
    broker: PathBuf,
    baseline: PathBuf,
}

/// Where `prepare` puts the servers' binaries.
fn servers(root: &Path, pgo: bool) -> Servers {
    if pgo {
        Servers {
            broker: crate::pgo::optimized(root, "broker").join("broker"),
            baseline: crate::pgo::optimized(root, "bench").join("baseline"),
        }
    } else {
        Servers { broker: root.join("target/release/broker"), baseline: root.join("target/release/baseline") }
    }
}

/// Builds the plugins, the load generator and, `with_servers`, the servers: the servers' binaries.
fn prepare(root: &Path, pgo: bool, with_servers: bool) -> Result<Servers> {
    crate::build_plugins(root)?;
    let cargo = |args: &[&str]| crate::run(crate::cargo(root).args(args));
    // The broker exactly as `cargo xtask dist` builds it (built alone, so its dependencies' features
    // are the same and the binary is the one shipped), then the baseline built the same way: the
    // comparison is between builds of one profile, trained on one load. The load generator is
    // the plain release build.
    cargo(&["build", "--release", "--package", "bench"])?;
    if with_servers && pgo {
        crate::dist::optimized_broker(root)?;
        let loadgen = root.join("target/release/loadgen");
        crate::pgo::build(root, "bench", "baseline", |baseline| {
            let mut server = Command::new(baseline);
            server.arg("127.0.0.1:0");
            crate::pgo::train(server, &loadgen)
        })?;
    } else if with_servers {
        crate::dist::build_broker(root)?;
    }
    cargo(&[
        "build",
        "--release",
        "--target",
        crate::WASM_TARGET,
        "--target-dir",
        "target/wasm",
        "--package",
        "versioned",
        "--package",
        "testbed",
    ])?;
    Ok(servers(root, pgo))
}

fn write_config(bench: &Bench) -> Result<()> {
    let plugins = bench.root.join("target/plugins");
    let versioned = std::fs::read(bench.root.join("target/wasm/wasm32-wasip2/release/versioned.wasm"))?;
    std::fs::write(bench.dir.0.join("versioned.wasm"), &versioned)?;
    for generation in [1, 2] {
        let copy = bench::versioned(&versioned, generation).context("the marker is in versioned.wasm")?;
        std::fs::write(bench.dir.0.join(format!("gen-{generation}.wasm")), copy)?;
    }
    let toml = format!(
        r#"[server]
outbound_queue = 4096
# The load generator is one client at full speed from a few addresses: no per-client limits.
messages_per_second = 0
max_connections = 1000000
max_connections_per_ip = 1000000

[plugins.echo]
path = "{echo}"

[plugins.chat]
path = "{chat}"

[plugins.versioned]
path = "versioned.wasm"

# The test plugin, whose handlers misbehave on request, for the hostile scenario.
[plugins.hostile]
path = "{testbed}"
timeout_ms = 200
max_memory_bytes = 33554432
max_sends_per_call = 1000

[[routes]]
path = "/ws/system"
plugin = "echo"

# The same echo in Python (componentize-py) and JavaScript (componentize-js), for plugin-cost.
[plugins.echo-py]
path = "{echo_py}"

[[routes]]
path = "/ws/py/system"
plugin = "echo-py"

[plugins.echo-js]
path = "{echo_js}"

[[routes]]
path = "/ws/js/system"
plugin = "echo-js"

[[routes]]
path = "/ws/chat/{{room}}"
plugin = "chat"

[[routes]]
path = "/ws/versioned"
plugin = "versioned"

[[routes]]
path = "/ws/hostile"
plugin = "hostile"
"#,
        echo = plugins.join("echo.wasm").display(),
        echo_py = plugins.join("echo-py.wasm").display(),
        echo_js = plugins.join("echo-js.wasm").display(),
        chat = plugins.join("chat.wasm").display(),
        testbed = bench.root.join("target/wasm/wasm32-wasip2/release/testbed.wasm").display(),
    );
    std::fs::write(bench.dir.0.join("broker.toml"), &toml)?;
    // The same service as one node of a Redis cluster (the cluster scenario adds the URL).
    Ok(std::fs::write(bench.dir.0.join("cluster.toml"), toml)?)
}

/// The median of `values` (of the upper two when even); `runs` is at least 1, so never empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `runs` runs of each case (a server, or whatever a scenario compares), taken in turns: this
/// machine's speed drifts by 10% and more within minutes, and a ratio of blocks of runs taken one
/// after the other would carry the drift.
fn alternating<S: Copy, T, const N: usize>(
    cases: [(&str, S); N],
    runs: usize,
    mut run: impl FnMut(&str, S, usize) -> Result<T>,
) -> Result<BTreeMap<&str, Vec<T>>> {
    let mut all: BTreeMap<&str, Vec<T>> = BTreeMap::new();
    for i in 0..runs {
        for (name, case) in cases {
            all.entry(name).or_default().push(run(name, case, i)?);
        }
    }
    Ok(all)
}

/// The run (of at least one) with the median value of `key`.
fn median_run<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> Result<T> {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle).context("no runs")
}

/// A ratio of two servers' runs taken one round at a time: its median over the rounds, and its
/// lowest and highest.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ByRound {
    median: f64,
    lowest: f64,
    highest: f64,
}

impl std::fmt::Display for ByRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ({:.2}-{:.2})", self.median, self.lowest, self.highest)
    }
}

/// `measure(a) / measure(b)` for the runs of each round (`a[i]` and `b[i]` were taken one after
/// the other), over the rounds. This machine's speed drifts by more than 1.5x within minutes, and
/// a drift moves both runs of a round alike: it cancels in each round's ratio, where it does not
/// in the ratio of two medians, each of which may come from a different round.
fn ratio_by_round<T>(a: &[T], b: &[T], measure: impl Fn(&T) -> Result<f64>) -> Result<ByRound> {
    ensure!(a.len() == b.len() && !a.is_empty(), "rounds: {} runs against {}", a.len(), b.len());
    let ratios = a.iter().zip(b).map(|(a, b)| Ok(measure(a)? / measure(b)?)).collect::<Result<Vec<f64>>>()?;
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(ByRound { median: median(ratios), lowest, highest })
}

/// A number for a table: whole above 1000, else up to two decimals.
fn num(n: f64) -> String {
    if n >= 1000.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Messages a second, over 1,000 connections, of the echo scenario's paced row: about a third of
/// what the broker answers at most on this machine, a fifth of the baseline's.
const ECHO_PACED_RATE: u64 = 30_000;

fn echo(bench: &Bench) -> Result<Report> {
    let (broker, baseline) = (bench.broker()?, bench.baseline()?);
    let mut table = vec![
        [
            "connections",
            "broker rt/s",
            "baseline rt/s",
            "ratio by round (lowest-highest)",
            "broker CPU µs/msg (user+sys)",
            "baseline CPU µs/msg (user+sys)",
            "CPU ratio by round (lowest-highest)",
            "broker p50/p99/p999 µs",
            "baseline p50/p99/p999 µs",
            "p99 read by loadgen µs, broker/baseline",
        ]
        .map(String::from)
        .to_vec(),
    ];
    // Closed loops (rate 0), then 1,000 connections sending at one rate below what either server
    // answers at most, where the latency is the servers' and not the queue of 1,000 messages in
    // flight a closed loop keeps (see "Tails" in BENCHMARKS.md).
    for (connections, rate) in [(1, 0), (10, 0), (100, 0), (1000, 0), (1000, ECHO_PACED_RATE)] {
        let runs = alternating([("broker", &broker), ("baseline", &baseline)], bench.runs, |_, server, _| {
            let url = server.url("/ws/system");
            let (connections, rate) = (connections.to_string(), rate.to_string());
            bench.loadgen::<Echo>(&args(&["echo", &url, &connections, "3", "1", "user_message", &server.pid(), &rate]))
        })?;
        let round_trips = ratio_by_round(&runs["broker"], &runs["baseline"], |r| Ok(r.per_second))?;
        let cpu = ratio_by_round(&runs["broker"], &runs["baseline"], |r| Ok(cpu_per_message(r)?.total()))?;
        // Paced, both servers answer every message: the latency is the measure.
        let key = |r: &Echo| if rate == 0 { r.per_second } else { r.p99_us as f64 };
        let mut results = BTreeMap::new();
        for (name, runs) in runs {
            results.insert(name, median_run(runs, key)?);
        }
        let (b, n) = (&results["broker"], &results["baseline"]);
        let latency = |r: &Echo| format!("{}/{}/{}", r.p50_us, r.p99_us, r.p999_us);
        let (b_cpu, n_cpu) = (cpu_per_message(b)?, cpu_per_message(n)?);
        table.push(vec![
            if rate == 0 { connections.to_string() } else { format!("{connections}, paced at {rate}/s") },
            num(b.per_second),
            num(n.per_second),
            round_trips.to_string(),
            cpu_cell(b_cpu),
            cpu_cell(n_cpu),
            cpu.to_string(),
            latency(b),
            latency(n),
            format!("{}/{}", b.read_p99_us, n.read_p99_us),
        ]);
    }
    Ok(Report {
        title: "echo: round trips through the wasm echo plugin".into(),
        command: "cargo xtask bench echo".into(),
        table,
    })
}

/// The dispatch path alone, stage by stage (broker/benches/dispatch.rs), in the release profile
/// (`cargo bench` builds it with `[profile.bench]`, which is `[profile.release]`).
fn dispatch(bench: &Bench) -> Result<Report> {
    let messages = (100_000 * bench.runs).to_string();
    let config = bench.dir.0.join("broker.toml");
    let output = crate::cargo(&bench.root)
        .args(["bench", "--package", "broker", "--bench", "dispatch", "--", "--json", "--messages", &messages])
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(output.status.success(), "the dispatch benchmark failed");
    let measured: results::Dispatch = results::last_line(&String::from_utf8(output.stdout)?)?;
    let mut table = vec![["stage", "ns per message (wall)", "CPU ns per message"].map(String::from).to_vec()];
    for stage in measured.stages {
        table.push(vec![stage.stage, format!("{:.0}", stage.wall_ns), format!("{:.0}", stage.cpu_ns)]);
    }
    Ok(Report {
        title: "dispatch: the path alone, frame text in and reply bytes out through the echo plugin, no sockets".into(),
        command: "cargo xtask bench dispatch".into(),
        table,
    })
}

/// The server's CPU time in the measured time per reply, in µs.
fn cpu_per_message(result: &Echo) -> Result<CpuTime> {
    let cpu = result.server_cpu.context("loadgen was not given the server's pid")?;
    Ok(cpu.per((result.replies as f64).max(1.0) / 1e6))
}

/// CPU per message for a table: the total, then its user and system parts.
fn cpu_cell(cpu: CpuTime) -> String {
    format!("{:.2} ({:.2}+{:.2})", cpu.total(), cpu.user, cpu.system)
}

fn plugin_cost(bench: &Bench) -> Result<Report> {
    let (broker, baseline) = (bench.broker()?, bench.baseline()?);
    let mut table = vec![["path", "round trips/s", "server CPU µs per message (user+sys)"].map(String::from).to_vec()];
    let cases = [
        ("broker, user_message -> wasm echo plugin (Rust)", (&broker, "user_message", "/ws/system")),
        ("broker, user_message -> wasm echo plugin (Python)", (&broker, "user_message", "/ws/py/system")),
        ("broker, user_message -> wasm echo plugin (JavaScript)", (&broker, "user_message", "/ws/js/system")),
        ("broker, ping answered natively", (&broker, "ping", "/ws/system")),
        ("baseline, user_message", (&baseline, "user_message", "/ws/system")),
    ];
    table.extend(cost_rows(bench, cases, "100")?);
    // One assistant turn per language against the scripted model: a question, two requests to the
    // model over the allow-list, one tool, three frames back.
    let model = Server::start(Command::new(bench.bin("model")))?;
    std::fs::write(bench.dir.0.join("assistant.toml"), assistant_config(bench, &model.addr)?)?;
    let broker = bench.broker_with("assistant.toml")?;
    let labels = [("Rust", "/ws/assistant"), ("Python", "/ws/py/assistant"), ("JavaScript", "/ws/js/assistant")].map(
        |(language, route)| {
            (format!("broker, one assistant turn ({language}), {ASSISTANT_CONNECTIONS} connections: per turn"), route)
        },
    );
    let cases = labels.each_ref().map(|(label, route)| (label.as_str(), (&broker, "turn", *route)));
    table.extend(cost_rows(bench, cases, ASSISTANT_CONNECTIONS)?);
    Ok(Report {
        title: "plugin-cost: server CPU per message, wasm dispatch against native handling (100 connections), and per assistant turn against a scripted model".into(),
        command: "cargo xtask bench plugin-cost".into(),
        table,
    })
}

/// Rows of plugin-cost, one per case `(label, (server, action, route))`: `connections` in closed
/// loop sending `action` to `route` of `server`, the cases' runs taken in turns; the median of the
/// round trips a second, and the server's CPU per round trip in the run of median CPU (its parts
/// are that run's: medians of each part need not add up).
fn cost_rows<const N: usize>(
    bench: &Bench,
    cases: [(&str, (&Server, &str, &str)); N],
    connections: &str,
) -> Result<Vec<Vec<String>>> {
    let mut runs = alternating(cases, bench.runs, |_, (server, action, route), _| {
        let result: Echo =
            bench.loadgen(&args(&["echo", &server.url(route), connections, "3", "1", action, &server.pid()]))?;
        Ok((result.per_second, cpu_per_message(&result)?))
    })?;
    let rows = cases.map(|(label, _)| {
        let runs = runs.remove(label).unwrap_or_default();
        let per_second = median(runs.iter().map(|(per_second, _)| *per_second).collect());
        let (_, cost) = median_run(runs, |(_, cost)| cost.total())?;
        Ok(vec![label.to_owned(), format!("{per_second:.0}"), cpu_cell(cost)])
    });
    rows.into_iter().collect()
}

/// Connections asking the assistant at once: a turn waits on the model twice, so a few keep the
/// broker busy.
const ASSISTANT_CONNECTIONS: &str = "10";

/// The bench's broker.toml plus the assistant in Rust, Python and JavaScript, each with the
/// scripted model at `model` (host:port) as its LLM, allowed and nothing else.
fn assistant_config(bench: &Bench, model: &str) -> Result<String> {
    let mut toml = std::fs::read_to_string(bench.dir.0.join("broker.toml"))?;
    let plugins = bench.root.join("target/plugins");
    for (name, route) in
        [("assistant", "/ws/assistant"), ("assistant-py", "/ws/py/assistant"), ("assistant-js", "/ws/js/assistant")]
    {
        toml.push_str(&format!(
            r#"
[plugins.{name}]
path = "{path}"
allow_hosts = ["{model}"]

[plugins.{name}.settings.llm]
base_url = "http://{model}/v1"
model = "scripted"
timeout_ms = 5000

[[routes]]
path = "{route}"
plugin = "{name}"
"#,
            path = plugins.join(format!("{name}.wasm")).display(),
        ));
    }
    Ok(toml)
}

fn fanout(bench: &Bench) -> Result<Report> {
    let (broker, baseline) = (bench.broker()?, bench.baseline()?);
    let mut table = vec![
        [
            "members",
            "broker deliveries/s",
            "baseline deliveries/s",
            "ratio",
            "broker p50/p99 µs",
            "baseline p50/p99 µs",
            "lost",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for members in [100u64, 1000, 10_000] {
        let messages = (1_000_000 / members).max(50);
        let runs = alternating([("broker", &broker), ("baseline", &baseline)], bench.runs, |_, server, run| {
            let room = server.url(&format!("/ws/chat/bench-{members}-{run}"));
            bench.loadgen::<Fanout>(&args(&["fanout", &room, &members.to_string(), &messages.to_string()]))
        })?;
        let mut results = BTreeMap::new();
        for (name, runs) in runs {
            results.insert(name, median_run(runs, |r| r.per_second)?);
        }
        let (b, n) = (&results["broker"], &results["baseline"]);
        table.push(vec![
            members.to_string(),
            num(b.per_second),
            num(n.per_second),
            format!("{:.2}", b.per_second / n.per_second),
            format!("{}/{}", b.p50_us, b.p99_us),
            format!("{}/{}", n.p50_us, n.p99_us),
            format!("{}/{}", b.lost, n.lost),
        ]);
    }
    Ok(Report {
        title: "fanout: one sender, one room, every member receives every message".into(),
        command: "cargo xtask bench fanout".into(),
        table,
    })
}

/// Fan-out across two nodes sharing a Redis against one node alone, same room sizes as `fanout`.
fn cluster(bench: &Bench) -> Result<Report> {
    let redis = bench::Redis::start(&bench.dir.0)?;
    let config = std::fs::read_to_string(bench.dir.0.join("cluster.toml"))?;
    let config =
        format!("{config}\n[cluster]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\n", redis.port);
    std::fs::write(bench.dir.0.join("cluster.toml"), config)?;
    let single = bench.broker()?;
    let (one, two) = (bench.broker_with("cluster.toml")?, bench.broker_with("cluster.toml")?);
    let mut table = vec![
        [
            "members",
            "cross-node deliveries/s",
            "single-node deliveries/s",
            "ratio",
            "cross p50/p99 µs",
            "single p50/p99 µs",
            "lost",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for members in [100u64, 1000, 10_000] {
        let messages = (1_000_000 / members).max(50);
        // Each case is (the sender's node, the members' node).
        let cases = [("cross", (&one, &two)), ("alone", (&single, &single))];
        let mut runs = alternating(cases, bench.runs, |name, (sender, room_of), run| {
            let room = format!("/ws/chat/cluster-{name}-{members}-{run}");
            let (url, members_url) = (sender.url(&room), room_of.url(&room));
            bench.loadgen::<Fanout>(&args(&["fanout", &url, &members.to_string(), &messages.to_string(), &members_url]))
        })?;
        let cross = median_run(runs.remove("cross").unwrap_or_default(), |r| r.per_second)?;
        let alone = median_run(runs.remove("alone").unwrap_or_default(), |r| r.per_second)?;
        table.push(vec![
            members.to_string(),
            num(cross.per_second),
            num(alone.per_second),
            format!("{:.2}", cross.per_second / alone.per_second),
            format!("{}/{}", cross.p50_us, cross.p99_us),
            format!("{}/{}", alone.p50_us, alone.p99_us),
            format!("{}/{}", cross.lost, alone.lost),
        ]);
    }
    Ok(Report {
        title: "cluster: one sender on node one, the room on node two (Redis between), against one node".into(),
        command: "cargo xtask bench cluster".into(),
        table,
    })
}

/// Members of the history scenario's room, messages sent to them, and the paced rate (messages a
/// second: about a quarter of what this machine delivers to 1,000 members unpaced).
const HISTORY_MEMBERS: u64 = 1000;
const HISTORY_MESSAGES: u64 = 1000;
const HISTORY_RATE: u64 = 250;
/// Messages a member misses, then recovers; the room keeps that many.
const HISTORY_MISSED: u64 = 10_000;

/// Fan-out to 1,000 members with the room's history off and on (unpaced: what it delivers at most;
/// paced: the latency at a steady rate), and the time a member takes to recover 10,000 messages.
fn history(bench: &Bench) -> Result<Report> {
    // The bench's broker.toml as the other scenarios use it: a replay takes one place of the
    // outbound queue (its bytes count, not its frames), so 10,000 frames need no larger queue.
    let off = std::fs::read_to_string(bench.dir.0.join("broker.toml"))?;
    let on = format!("{off}\n[plugins.chat.history]\nsize = {HISTORY_MISSED}\nttl_ms = 300000\n");
    std::fs::write(bench.dir.0.join("history-off.toml"), off)?;
    std::fs::write(bench.dir.0.join("history-on.toml"), on)?;
    let servers = [("off", bench.broker_with("history-off.toml")?), ("on", bench.broker_with("history-on.toml")?)];
    let mut table = vec![["measure", "history off", "history on", "on / off"].map(String::from).to_vec()];
    for rate in [0, HISTORY_RATE] {
        // Off and on alternate, so what else runs on the machine weighs on both alike.
        let mut runs =
            alternating(servers.each_ref().map(|(name, server)| (*name, server)), bench.runs, |name, server, run| {
                let room = server.url(&format!("/ws/chat/history-{rate}-{run}"));
                let (members, messages) = (HISTORY_MEMBERS.to_string(), HISTORY_MESSAGES.to_string());
                let r: results::Paced =
                    bench.loadgen(&args(&["paced", &room, &members, &messages, &rate.to_string()]))?;
                let numbered = if name == "on" { r.deliveries } else { 0 };
                ensure!(r.numbered == numbered, "history {name}: {} of {} frames numbered", r.numbered, r.deliveries);
                Ok(r)
            })?;
        // Unpaced, the throughput is the measure; paced, the latency.
        let key = |r: &results::Paced| if rate == 0 { r.per_second } else { r.p99_us as f64 };
        let off = median_run(runs.remove("off").unwrap_or_default(), key)?;
        let on = median_run(runs.remove("on").unwrap_or_default(), key)?;
        let how = if rate == 0 { "unpaced".to_owned() } else { format!("{rate} msg/s") };
        let delivered = |r: &results::Paced| match r.lost {
            0 => num(r.per_second),
            lost => format!("{} ({lost} lost)", num(r.per_second)),
        };
        table.push(vec![
            format!("fan-out to {HISTORY_MEMBERS}, {how}: deliveries/s"),
            delivered(&off),
            delivered(&on),
            format!("{:.2}", on.per_second / off.per_second),
        ]);
        table.push(vec![
            format!("fan-out to {HISTORY_MEMBERS}, {how}: p50/p99 µs"),
            format!("{}/{}", off.p50_us, off.p99_us),
            format!("{}/{}", on.p50_us, on.p99_us),
            format!("{:.2} (p99)", on.p99_us as f64 / off.p99_us.max(1) as f64),
        ]);
    }
    let on = &servers[1].1;
    let recoveries = (0..bench.runs)
        .map(|run| {
            let room = on.url(&format!("/ws/chat/recover-{run}"));
            bench.loadgen(&args(&["recover", &room, &HISTORY_MISSED.to_string()]))
        })
        .collect::<Result<Vec<results::Recovery>>>()?;
    let worst = recoveries.iter().map(|r| r.last_ms).fold(0.0, f64::max);
    let incomplete = recoveries.iter().find(|r| !(r.recovered && r.replayed == HISTORY_MISSED && r.in_order));
    let complete = match incomplete {
        None => "yes, every run".to_owned(),
        Some(r) => format!("no: recovered {}, replayed {}, in order {}", r.recovered, r.replayed, r.in_order),
    };
    let r = median_run(recoveries, |r| r.last_ms)?;
    table.push(vec![
        format!("recovery of {HISTORY_MISSED} missed: complete, in order"),
        "-".into(),
        complete,
        "-".into(),
    ]);
    table.push(vec![
        format!("recovery of {HISTORY_MISSED} missed: ms to `recovered` / to the last frame (max)"),
        "-".into(),
        format!("{} / {} ({})", num(r.told_ms), num(r.last_ms), num(worst)),
        "-".into(),
    ]);
    Ok(Report {
        title: "history: fan-out with the room's history off and on, and recovering missed messages".into(),
        command: "cargo xtask bench history".into(),
        table,
    })
}

/// Opens `count` idle connections and returns the server's (RSS, PSS) growth per connection, in KiB.
fn held(bench: &Bench, server: &Server, count: usize) -> Result<(f64, f64, f64)> {
    let (rss0, pss0) = server.memory_kib()?;
    let mut loadgen = Command::new(bench.bin("loadgen"))
        .args(args(&["hold", &server.url("/ws/system"), &count.to_string()]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(loadgen.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let ready: results::Ready = results::last_line(&line).context("loadgen hold's first line")?;
    if ready.ready != count as u64 {
        bail!("only {} of {count} connections were opened", ready.ready);
    }
    let (rss1, pss1) = server.memory_kib()?;
    if let Some(mut stdin) = loadgen.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let status = loadgen.wait()?;
    ensure!(status.success(), "loadgen hold failed with {status}");
    let held: results::Held = results::last_line(&rest).context("loadgen hold's last line")?;
    ensure!(held.held == count as u64, "loadgen held {} connections, not {count}", held.held);
    let n = count as f64;
    Ok(((rss1 - rss0) / n, (pss1 - pss0) / n, ready.connect_seconds))
}

fn connections(bench: &Bench) -> Result<Report> {
    let mut table = vec![
        [
            "idle connections",
            "broker KiB/conn RSS",
            "broker KiB/conn PSS",
            "baseline KiB/conn RSS",
            "baseline KiB/conn PSS",
            "ratio (RSS)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    // This machine's hard limit on open files is 20,000 per process and cannot be raised without
    // CAP_SYS_RESOURCE: 18,000 is the most one server process can hold here.
    for count in [10_000usize, 18_000] {
        let mut results: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for _ in 0..bench.runs {
            for name in ["broker", "baseline"] {
                // A fresh server each time: the growth measured is these connections' alone.
                let server = if name == "broker" { bench.broker()? } else { bench.baseline()? };
                let (rss, pss, _) = held(bench, &server, count)?;
                let entry = results.entry(name).or_default();
                entry.0.push(rss);
                entry.1.push(pss);
            }
        }
        let get = |name: &str| {
            let (rss, pss) = results[name].clone();
            (median(rss), median(pss))
        };
        let ((brss, bpss), (nrss, npss)) = (get("broker"), get("baseline"));
        table.push(vec![
            count.to_string(),
            format!("{brss:.2}"),
            format!("{bpss:.2}"),
            format!("{nrss:.2}"),
            format!("{npss:.2}"),
            format!("{:.2}", brss / nrss.max(0.01)),
        ]);
    }
    Ok(Report {
        title: "connections: memory per idle connection (server growth / connections)".into(),
        command: "cargo xtask bench connections".into(),
        table,
    })
}

fn reload(bench: &Bench) -> Result<Report> {
    let mut table = vec![
        ["run", "swaps", "replies", "lost", "worst reply ms", "cold swap ms", "warm swap ms median/max"]
            .map(String::from)
            .to_vec(),
    ];
    for run in 0..bench.runs {
        std::fs::copy(
            bench.root.join("target/wasm/wasm32-wasip2/release/versioned.wasm"),
            bench.dir.0.join("versioned.wasm"),
        )?;
        let broker = bench.broker()?;
        let file = bench.dir.0.join("versioned.wasm").display().to_string();
        let mut arguments = args(&["reload", &broker.url("/ws/versioned"), "100", &file]);
        for swap in 0..20 {
            let generation = 1 + swap % 2;
            arguments.push(format!(
                "GENERATION-00{generation}={}",
                bench.dir.0.join(format!("gen-{generation}.wasm")).display()
            ));
        }
        let r: results::Reload = bench.loadgen(&arguments)?;
        table.push(vec![
            (run + 1).to_string(),
            r.swaps.to_string(),
            num(r.replies as f64),
            r.lost.to_string(),
            num(r.worst_reply_ms),
            r.cold_swap_ms.iter().copied().map(num).collect::<Vec<_>>().join(", "),
            format!("{}/{}", num(r.warm_swap_ms_median), num(r.warm_swap_ms_max)),
        ]);
    }
    Ok(Report {
        title: "reload: 100 connections in closed-loop echo while the plugin file is replaced 20 times".into(),
        command: "cargo xtask bench reload".into(),
        table,
    })
}

/// Bystanders' echo latency (10 connections) with no attack, then while one client repeats each
/// attack of the test plugin on another route.
fn hostile(bench: &Bench) -> Result<Report> {
    let broker = bench.broker()?;
    let mut table = vec![
        ["attack", "attacks/s", "bystander rt/s", "bystander p50/p99 µs", "p99 against no attack"]
            .map(String::from)
            .to_vec(),
    ];
    // Bystanders: the echo plugin, or the attacked plugin itself (its `params` handler answers).
    let echo = |route: &str, action: &str| -> Result<Echo> {
        bench.loadgen(&args(&["echo", &broker.url(route), "10", "3", "1", action]))
    };
    let other = ("/ws/system", "user_message");
    let same = ("/ws/hostile", "params");
    // The last rows attack the bystanders' own plugin: a message too large for it (refused with
    // 1009 before any call), and three clients making it trap (each connection closed after three
    // crashes, and reopened).
    let big = format!("big:{}", 12 << 20);
    // Bystanders (route, action), attacked route, action, attacking clients.
    type Row<'a> = ((&'a str, &'a str), &'a str, &'a str, &'a str);
    let rows: [(&str, Row); 9] = [
        ("none", (other, "", "", "")),
        ("spin", (other, "/ws/hostile", "spin", "1")),
        ("allocate", (other, "/ws/hostile", "allocate", "1")),
        ("recurse", (other, "/ws/hostile", "recurse", "1")),
        ("panic", (other, "/ws/hostile", "panic", "1")),
        ("flood", (other, "/ws/hostile", "flood", "1")),
        ("12 MiB echo x3, same plugin", (other, "/ws/system", &big, "3")),
        ("none, test plugin", (same, "", "", "")),
        ("panic x3, same plugin", (same, "/ws/hostile", "panic", "3")),
    ];
    let mut normal_p99 = std::collections::HashMap::new();
    for (row, ((by_route, by_action), route, action, clients)) in rows {
        let mut runs = Vec::new();
        let mut attacks = Vec::new();
        for _ in 0..bench.runs {
            if route.is_empty() {
                runs.push(echo(by_route, by_action)?);
                continue;
            }
            // The attacker outlasts the measurement (1 s warm-up, 3 s measured).
            let attacker = Command::new(bench.bin("loadgen"))
                .args(["attack", &broker.url(route), action, "5", clients])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            runs.push(echo(by_route, by_action)?);
            let output = attacker.wait_with_output()?;
            if !output.status.success() {
                bail!("the {row} attacker failed");
            }
            let result: results::Attack = results::last_line(&String::from_utf8(output.stdout)?)
                .with_context(|| format!("the {row} attacker"))?;
            attacks.push(result.attacks as f64 / 5.0);
        }
        let r = median_run(runs, |r| r.p99_us as f64)?;
        let p99 = r.p99_us as f64;
        let normal = *normal_p99.entry(by_route).or_insert(p99);
        table.push(vec![
            row.to_owned(),
            if attacks.is_empty() { "-".into() } else { format!("{:.0}", median(attacks)) },
            num(r.per_second),
            format!("{}/{}", r.p50_us, r.p99_us),
            format!("{:.2}", p99 / normal.max(1.0)),
        ]);
    }
    Ok(Report {
        title: "hostile: bystanders' echo latency while a plugin misbehaves, on another route or on theirs".into(),
        command: "cargo xtask bench hostile".into(),
        table,
    })
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn markdown(report: &Report) -> String {
    let mut out = format!("### {}\n\n`{}`\n\n", report.title, report.command);
    for (i, row) in report.table.iter().enumerate() {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            out.push_str(&format!("|{}\n", "---|".repeat(row.len())));
        }
    }
    out
}

/// `benchmarks` (BENCHMARKS.md) with `report`'s section (from its `### ` heading, found by the
/// command line under it, to the next heading) replaced by a run of that scenario alone, or added
/// at the end.
fn splice(benchmarks: &str, report: &Report) -> String {
    let section = markdown(report).replacen(
        &format!("`{}`\n", report.command),
        &format!("`{}` (this section from a run of that scenario alone)\n", report.command),
        1,
    );
    let command = format!("\n`{}`", report.command);
    let found = benchmarks.match_indices(&command).find_map(|(at, _)| {
        // The line under a heading, not a mention in the prose (`cargo xtask bench fanout`, ...).
        let after = &benchmarks[at + command.len()..];
        if !(after.starts_with('\n') || after.starts_with(" (")) {
            return None;
        }
        let start = benchmarks[..at].trim_end_matches('\n').rfind("\n### ").map(|i| i + 1)?;
        let end = benchmarks[at + 1..].find("\n### ").map_or(benchmarks.len(), |i| at + 1 + i + 1);
        Some((start, end))
    });
    match found {
        Some((start, end)) => {
            let gap = if end < benchmarks.len() { "\n" } else { "" };
            format!("{}{section}{gap}{}", &benchmarks[..start], &benchmarks[end..])
        }
        None => format!("{}\n\n{section}", benchmarks.trim_end()),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} memory, Linux {}", kernel.trim())
}

/// The header a full `--write` puts at the top of BENCHMARKS.md: the machine, the run's length, the
/// runs per figure and the profile, as placeholders. The prose after it is BENCHMARKS.md's own,
/// edited there by hand between runs and carried over.
const HEADER_TEMPLATE: &str = "xtask/bench/BENCHMARKS.head.md";

/// The header template's placeholders, each filled with one line's worth of text.
const PLACEHOLDERS: [&str; 4] = ["{machine}", "{seconds}", "{runs}", "{profile}"];

/// The prose of `benchmarks` (BENCHMARKS.md) between the header that `template` writes and the
/// first `### ` section, or the first line of the header that does not fit the template, whose
/// prose could not be told apart from it.
fn prose_after_header<'a>(benchmarks: &'a str, template: &str) -> Result<&'a str, String> {
    let mut rest = benchmarks.find("\n### ").map_or(benchmarks, |end| &benchmarks[..end]);
    for (n, pattern) in template.lines().enumerate() {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        if rest.is_empty() || !fills(line, pattern) {
            return Err(format!("line {}: {}", n + 1, if rest.is_empty() { "(the end)" } else { line }));
        }
        rest = after;
    }
    Ok(rest)
}

/// Whether `line` is the template's line `pattern` with its placeholder (one a line at most)
/// filled.
fn fills(line: &str, pattern: &str) -> bool {
    match PLACEHOLDERS.iter().find_map(|placeholder| pattern.split_once(placeholder)) {
        Some((before, after)) => {
            line.len() >= before.len() + after.len() && line.starts_with(before) && line.ends_with(after)
        }
        None => line == pattern,
    }
}

/// The header template and the prose of the BENCHMARKS.md there is (none when there is none yet).
fn prose_of(root: &Path) -> Result<(String, String)> {
    let path = root.join(HEADER_TEMPLATE);
    let template = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let benchmarks = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
    if benchmarks.is_empty() {
        return Ok((template, String::new()));
    }
    let prose = prose_after_header(&benchmarks, &template).map_err(|line| {
        anyhow::anyhow!(
            "BENCHMARKS.md's header is not the one {HEADER_TEMPLATE} writes ({line}): its prose cannot be carried over"
        )
    })?;
    Ok((template, prose.to_owned()))
}

/// The workspace's `[profile.release]`, as `key = value` pairs for BENCHMARKS.md's header: read
/// from Cargo.toml, so the header says what was measured.
fn release_profile(root: &Path) -> Result<String> {
    let path = root.join("Cargo.toml");
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path)?).with_context(|| format!("{} is not TOML", path.display()))?;
    let profile = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .and_then(toml::Value::as_table)
        .with_context(|| format!("{} has no [profile.release]", path.display()))?;
    Ok(profile.iter().map(|(key, value)| format!("`{key} = {value}`")).collect::<Vec<_>>().join(", "))
}

fn write_benchmarks(root: &Path, reports: &[Report], seconds: f64, runs: usize, pgo: bool) -> Result<()> {
    let (mut out, prose) = prose_of(root)?;
    let mut build = release_profile(root)?;
    if pgo {
        build.push_str(", then profile-guided optimization (`xtask/src/pgo.rs`: each server trained on the load generator's echo and fan-out)");
    }
    let values = [machine(), format!("{seconds:.0}"), runs.to_string(), build];
    for (placeholder, value) in PLACEHOLDERS.iter().zip(&values) {
        out = out.replace(placeholder, value);
    }
    out.push_str(&prose);
    for report in reports {
        out.push('\n');
        out.push_str(&markdown(report));
    }
    std::fs::write(root.join("BENCHMARKS.md"), out)?;
    eprintln!("wrote BENCHMARKS.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, value: &str) -> Report {
        Report {
            title: format!("{name}: a scenario"),
            command: format!("cargo xtask bench {name}"),
            table: vec![vec!["a".into()], vec![value.into()]],
        }
    }

    #[test]
    fn the_prose_after_the_header_is_carried_over_and_a_changed_header_refused() {
        let template = "# B\n\nOn {machine}.\nTook {seconds} s.\n";
        let written = "# B\n\nOn 2 cores.\nTook 598 s.\n\nProse,\nand a finding.\n\n### echo\n\n| a |\n";
        assert_eq!(prose_after_header(written, template).as_deref(), Ok("\nProse,\nand a finding.\n"));
        let edited = written.replace("On 2", "Measured on 2");
        assert_eq!(prose_after_header(&edited, template), Err("line 3: Measured on 2 cores.".into()));
        // A placeholder's value stays on its line.
        let spilled = written.replace("2 cores.", "2\ncores.");
        assert_eq!(prose_after_header(&spilled, template), Err("line 3: On 2".into()));
        assert_eq!(prose_after_header("# B\n\nOn 2 cores.\n", template), Err("line 4: (the end)".into()));
    }

    #[test]
    fn a_full_write_can_carry_over_the_prose_of_benchmarks_md() {
        let (_, prose) = prose_of(&crate::workspace_root()).unwrap_or_else(|error| panic!("{error}"));
        assert!(prose.contains("\n## The targets\n"), "{prose}");
    }

    #[test]
    fn one_scenario_replaces_its_section_alone() {
        let head = "# Benchmarks\n\nCommands:\n`cargo xtask bench fanout`, `cargo xtask bench echo`\n";
        let all = format!("{head}\n{}\n{}", markdown(&report("echo", "1")), markdown(&report("fanout", "2")));
        let echo = splice(&all, &report("echo", "3"));
        let expected = "### echo: a scenario\n\n`cargo xtask bench echo` (this section from a run of that scenario alone)\n\n| a |\n|---|\n| 3 |\n";
        assert_eq!(echo, format!("{head}\n{expected}\n{}", markdown(&report("fanout", "2"))));
        // The last section, and again: the same text, nothing doubled.
        let fanout = splice(&echo, &report("fanout", "4"));
        assert!(fanout.ends_with("alone)\n\n| a |\n|---|\n| 4 |\n"), "{fanout}");
        assert_eq!(splice(&fanout, &report("fanout", "4")), fanout);
        assert_eq!(fanout.matches("### ").count(), 2);
        // A scenario not there yet is added at the end; `cargo xtask bench echo-2` is not echo's.
        let added = splice(&fanout, &report("echo-2", "5"));
        assert!(added.starts_with(&fanout.trim_end().to_owned()), "{added}");
        assert!(added.ends_with("| 5 |\n") && added.matches("### ").count() == 3, "{added}");
    }

    #[test]
    fn a_ratio_by_round_pairs_the_runs_of_each_round() {
        // Round by round 0.6, 2.4 and 1.2; runs paired by rank instead would give 1.2 three times.
        let ratio = ratio_by_round(&[6.0, 12.0, 9.0], &[10.0, 5.0, 7.5], |x| Ok(*x)).unwrap();
        assert_eq!(ratio.to_string(), "1.20 (0.60-2.40)");
        // Of an even count, the upper middle one, as every median of the bench.
        let spread = ratio_by_round(&[1.0, 3.0, 2.0, 4.0], &[1.0, 1.0, 1.0, 1.0], |x| Ok(*x)).unwrap();
        assert_eq!(spread, ByRound { median: 3.0, lowest: 1.0, highest: 4.0 });
        assert_eq!(spread.to_string(), "3.00 (1.00-4.00)");
        assert!(ratio_by_round(&[1.0], &[1.0, 2.0], |x| Ok(*x)).is_err());
    }

    #[test]
    fn cpu_per_message_keeps_the_user_and_system_parts_of_the_run() {
        let run = Echo {
            connections: 100,
            replies: 250_000,
            per_second: 50_000.0,
            p50_us: 1,
            p99_us: 2,
            p999_us: 3,
            read_p50_us: 1,
            read_p99_us: 2,
            server_cpu: Some(CpuTime { user: 1.5, system: 2.25 }),
            loadgen_cpu_seconds: 1.0,
        };
        let cpu = cpu_per_message(&run).unwrap();
        assert_eq!(cpu, CpuTime { user: 6.0, system: 9.0 });
        assert_eq!(cpu_cell(cpu), "15.00 (6.00+9.00)");
        assert!(cpu_per_message(&Echo { server_cpu: None, ..run }).is_err());
    }

    #[test]
    fn every_case_takes_its_runs_in_turns_with_the_others() {
        let mut order = Vec::new();
        let runs = alternating([("broker", 1), ("ping", 2), ("baseline", 3)], 2, |name, case, run| {
            order.push(format!("{name}{run}"));
            Ok(case * 10 + run)
        })
        .unwrap();
        assert_eq!(order, ["broker0", "ping0", "baseline0", "broker1", "ping1", "baseline1"]);
        assert_eq!(runs["broker"], [10, 11]);
        assert_eq!(runs["ping"], [20, 21]);
        assert_eq!(runs["baseline"], [30, 31]);
    }
}
