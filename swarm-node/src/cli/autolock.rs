//! Autolock's commands, as docker/cli's: `swarm unlock-key [-q] [--rotate]`,
//! `swarm unlock` (the key from a prompt on a terminal, else a line of
//! stdin), and the unlock key printed after `init --autolock` and
//! `update --autolock=true`.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;
use clap::Args;

use super::call;
use crate::api::control::{Request, Response};

#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Print only the key.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the key; a manager down meanwhile still opens with the old
    /// one until it has restarted and taken the new one.
    #[arg(long)]
    pub rotate: bool,
}

/// Parses `--autolock`, `--autolock=true` and `--autolock=false`.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not a boolean; use true or false")),
    }
}

/// The swarm's unlock key; empty while autolock is off.
pub fn unlock_key(host: &str, rotate: bool) -> anyhow::Result<String> {
    let Response::Json(answer) = call(host, &Request::SwarmUnlockKey { rotate })? else {
        anyhow::bail!("the daemon answered `unlock-key` with something else");
    };
    Ok(answer["UnlockKey"].as_str().unwrap_or_default().to_owned())
}

/// Whether autolock is on, as `GET /swarm` says.
pub fn autolock_on(host: &str) -> anyhow::Result<bool> {
    let Response::Json(swarm) = call(host, &Request::SwarmInspect)? else {
        anyhow::bail!("the daemon answered with something else");
    };
    Ok(swarm["Spec"]["EncryptionConfig"]["AutoLockManagers"] == true)
}

/// docker/cli's words around an unlock key.
pub fn print_unlock_command(key: &str) {
    if key.is_empty() {
        return;
    }
    println!(
        "To unlock a swarm manager after it restarts, run the `swarm unlock`\n\
         command and provide the following key:\n\n    {key}\n\n\
         Remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager."
    );
}

pub fn run_unlock_key(host: &str, args: &UnlockKeyArgs) -> anyhow::Result<()> {
    if args.rotate && !args.quiet {
        let key = unlock_key(host, true)?;
        println!("Successfully rotated manager unlock key.\n");
        print_unlock_command(&key);
        return Ok(());
    }
    let key = unlock_key(host, args.rotate)?;
    if key.is_empty() {
        anyhow::bail!("no unlock key is set");
    }
    if args.quiet {
        println!("{key}");
    } else {
        print_unlock_command(&key);
    }
    Ok(())
}

pub fn run_unlock(host: &str) -> anyhow::Result<()> {
    let key = read_key("Please enter unlock key: ")?;
    call(host, &Request::SwarmUnlock { key })?;
    Ok(())
}

/// The key: typed at a prompt without echo on a terminal, else the first
/// line of stdin.
fn read_key(prompt: &str) -> anyhow::Result<String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the unlock key from stdin")?;
        return Ok(line.trim().to_owned());
    }
    print!("{prompt}");
    io::stdout().flush()?;
    let _echo_off = EchoOff::new(&stdin)?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the unlock key")?;
    println!();
    Ok(line.trim().to_owned())
}

/// The terminal's echo, off while the key is typed, back on when dropped.
struct EchoOff {
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new(stdin: &io::Stdin) -> anyhow::Result<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(stdin, SetArg::TCSANOW, &quiet).context("turning the terminal's echo off")?;
        Ok(Self { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
