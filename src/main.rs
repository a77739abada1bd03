//! gatehouse command line: `gatehouse -c FILE [-d] [-u] [-t]` runs the proxy,
//! `gatehouse check -c FILE` validates a config, `gatehouse health [--admin ADDR]` asks a
//! running instance's admin listener whether it is alive, `gatehouse schema` prints the JSON
//! Schema of the config.

use gatehouse::server::Options;
use std::path::PathBuf;
use std::process::exit;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: gatehouse [-c FILE] [-d] [-u] [-t]      run the proxy
       gatehouse check -c FILE                 validate a config and exit
       gatehouse health [--admin ADDR]         exit 0 if the admin /health answers 200
                                               (default 127.0.0.1:9901), else 1
       gatehouse schema                        print the JSON Schema of the config file

  -c, --conf FILE   gatehouse config (default conf/gatehouse.yaml)
  -d, --daemon      run in the background
  -u, --upgrade     take the listening sockets over from a running instance
  -t, --test        load the config, start nothing, exit
  -V, --version     print the version";

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut check = false;
    let mut opts = Options {
        config_path: PathBuf::from("conf/gatehouse.yaml"),
        ..Default::default()
    };
    if args.peek().is_some_and(|a| a == "health") {
        args.next();
        let mut admin = String::from("127.0.0.1:9901");
        while let Some(a) = args.next() {
            match (a.as_str(), args.next()) {
                ("--admin", Some(v)) => admin = v,
                _ => usage_error(&format!("health: unexpected argument {a:?}")),
            }
        }
        match gatehouse::admin::probe_health(&admin, std::time::Duration::from_secs(3)) {
            Ok(()) => exit(0),
            Err(e) => {
                eprintln!("gatehouse health: {e}");
                exit(1)
            }
        }
    }
    if args.peek().is_some_and(|a| a == "schema") {
        args.next();
        if let Some(a) = args.next() {
            usage_error(&format!("schema: unexpected argument {a:?}"));
        }
        let schema = gatehouse::config::schema();
        match serde_json::to_string_pretty(&schema) {
            Ok(text) => {
                println!("{text}");
                exit(0)
            }
            Err(e) => {
                eprintln!("gatehouse schema: {e}");
                exit(1)
            }
        }
    }
    if args.peek().map(|a| a == "check").unwrap_or(false) {
        check = true;
        args.next();
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" | "--conf" => match args.next() {
                Some(p) => opts.config_path = PathBuf::from(p),
                None => usage_error("-c needs a file"),
            },
            "-d" | "--daemon" => opts.daemon = true,
            "-u" | "--upgrade" => opts.upgrade = true,
            "-t" | "--test" => opts.test = true,
            "--nocapture" => {}
            // Lets the test harness check that the binary was built from its own checkout.
            "--manifest-dir" => {
                println!("{}", env!("CARGO_MANIFEST_DIR"));
                exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0);
            }
            "-V" | "--version" => {
                println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
                exit(0);
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }

    let cfg = match gatehouse::config::load(&opts.config_path) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("{}: invalid config:", opts.config_path.display());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            exit(1);
        }
    };
    if check {
        // What only compiling finds: route conflicts, rewrites, the GeoIP database, the bot
        // pattern set's size.
        if let Err(errs) = gatehouse::runtime::Runtime::compile(cfg, None) {
            eprintln!("{}: invalid config:", opts.config_path.display());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            exit(1);
        }
        println!("{}: ok", opts.config_path.display());
        exit(0);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    gatehouse::server::run(cfg, opts)
}

fn usage_error(msg: &str) -> ! {
    eprintln!("gatehouse: {msg}\n{USAGE}");
    exit(2)
}
