//! A child process killed and reaped on drop.

use std::{
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child) -> Self {
        ChildGuard { child: Some(child), name: name.to_string() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, no questions asked.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process has exited (and reaps it if so).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGTERM first, so a process that forks helpers (dhcpcd's privilege
        // separation) takes them down with it; SIGKILL after a moment.
        if let Some(status) = self.signal_and_wait(libc::SIGTERM, Duration::from_millis(500)) {
            if !status.success() && std::thread::panicking() {
                eprintln!("testbed: {} ended: {status}", self.name);
            }
            return;
        }
        if let Some(status) = self.kill() {
            if !status.success() && std::thread::panicking() {
                eprintln!("testbed: {} ended: {status}", self.name);
            }
        }
    }
}
