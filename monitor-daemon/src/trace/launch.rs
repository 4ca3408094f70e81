//! Starting the command of `leakmon trace -- COMMAND`: the child is forked and held before
//! `execve` until the probes are attached, so the tracer sees the command's first allocation.

use std::{
    ffi::{CString, OsStr},
    num::NonZeroU32,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::oneshot;

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program is not a path to an executable file and not on `PATH`.
    #[error("command not found: {0}")]
    NotFound(String),
    /// An argument contains a NUL byte.
    #[error("command argument contains a NUL byte: {0:?}")]
    Nul(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Finds `program` the way a shell does: as a path if it contains a slash, else on `PATH`.
pub fn resolve_program(program: &str) -> Result<PathBuf, LaunchError> {
    let is_executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(LaunchError::NotFound(program.to_owned()))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| LaunchError::NotFound(program.to_owned()))
}

fn sys_error(what: &'static str) -> LaunchError {
    LaunchError::Sys {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// A forked child waiting to `execve` the command.
#[derive(Debug)]
pub struct HeldChild {
    pid: NonZeroU32,
    release: Option<OwnedFd>,
}

impl HeldChild {
    /// Forks a child that will execute `exe` with `argv` (argv\[0\] as given) once released.
    pub fn spawn(exe: &Path, argv: &[String]) -> Result<Self, LaunchError> {
        let to_c = |bytes: &[u8]| {
            CString::new(bytes)
                .map_err(|_| LaunchError::Nul(String::from_utf8_lossy(bytes).into_owned()))
        };
        let exe_c = to_c(exe.as_os_str().as_bytes())?;
        let args = argv
            .iter()
            .map(|arg| to_c(OsStr::new(arg).as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|arg| arg.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());

        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(sys_error("creating the start pipe"));
        }
        // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only calls async-signal-safe functions (close, read, execv, _exit)
        // on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(sys_error("forking the command"));
        }
        if pid == 0 {
            // SAFETY: see above; this branch never returns.
            unsafe {
                libc::close(write_end.as_raw_fd());
                let mut byte = 0u8;
                let n = libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1);
                if n == 1 {
                    libc::execv(exe_c.as_ptr(), arg_ptrs.as_ptr());
                }
                libc::_exit(127);
            }
        }
        drop(read_end);
        let pid = NonZeroU32::new(pid as u32).ok_or(LaunchError::Sys {
            what: "forking the command",
            source: std::io::Error::other("fork returned pid 0 in the parent"),
        })?;
        Ok(Self {
            pid,
            release: Some(write_end),
        })
    }

    /// The child's pid (the command's pid once it runs).
    pub fn pid(&self) -> NonZeroU32 {
        self.pid
    }

    /// Lets the child `execve` the command; the receiver yields its wait status when it exits.
    pub fn release(mut self) -> Result<RunningChild, LaunchError> {
        let fd = self.release.take().ok_or(LaunchError::Sys {
            what: "releasing the command",
            source: std::io::Error::other("already released"),
        })?;
        let byte = 1u8;
        // SAFETY: writes one byte from a live local.
        let written = unsafe { libc::write(fd.as_raw_fd(), (&raw const byte).cast(), 1) };
        if written != 1 {
            return Err(sys_error("releasing the command"));
        }
        drop(fd);
        let pid = self.pid;
        let (sender, exited) = oneshot::channel();
        std::thread::Builder::new()
            .name("leakmon-wait".into())
            .spawn(move || {
                let _ = sender.send(wait_for(pid));
            })
            .map_err(|source| LaunchError::Sys {
                what: "starting the wait thread",
                source,
            })?;
        Ok(RunningChild { pid, exited })
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if let Some(fd) = self.release.take() {
            // Closing the pipe unblocks the child, which exits without running the command.
            drop(fd);
            wait_for(self.pid);
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It returned or called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

fn wait_for(pid: NonZeroU32) -> ExitStatus {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live local.
        let ret = unsafe { libc::waitpid(pid.get() as i32, &mut status, 0) };
        if ret == pid.get() as i32 {
            break;
        }
        if ret < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return ExitStatus::Code(-1);
        }
    }
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

/// The command, running.
#[derive(Debug)]
pub struct RunningChild {
    pid: NonZeroU32,
    exited: oneshot::Receiver<ExitStatus>,
}

impl RunningChild {
    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        (&mut self.exited).await.unwrap_or(ExitStatus::Code(-1))
    }

    /// Ends the command: SIGTERM, then SIGKILL if it is still running after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> ExitStatus {
        // SAFETY: signals our own child, which we have not reaped yet.
        unsafe { libc::kill(self.pid.get() as i32, libc::SIGTERM) };
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid.get() as i32, libc::SIGKILL) };
                self.wait().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_programs_on_path_and_by_path() {
        let sh = resolve_program("sh").expect("sh is on PATH");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(
            resolve_program("/bin/sh").expect("absolute path").as_path(),
            Path::new("/bin/sh")
        );
        assert!(matches!(
            resolve_program("no-such-program-leakmon"),
            Err(LaunchError::NotFound(_))
        ));
        assert!(matches!(
            resolve_program("/etc/passwd"),
            Err(LaunchError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn held_child_runs_only_when_released() {
        let exe = resolve_program("sh").expect("sh");
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "exit 7".to_owned()];
        let held = HeldChild::spawn(&exe, &argv).expect("spawn");
        let mut child = held.release().expect("release");
        assert_eq!(child.wait().await, ExitStatus::Code(7));

        let held = HeldChild::spawn(&exe, &argv).expect("spawn");
        let pid = held.pid();
        drop(held);
        // The dropped child exited without running the command and was reaped.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
