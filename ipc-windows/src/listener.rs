//! The server side: [`PipeListener`] and its [`PipeOptions`].

use std::fmt;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use ipc_core::{Address, BoxTransport, Error, Listener, PeerInfo, Result};
use tokio::net::windows::named_pipe::{NamedPipeServer, PipeMode, ServerOptions};
use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_NO_DATA, ERROR_PIPE_BUSY};

use crate::security::{self, PipeAccess};
use crate::sys::{self, SecurityDescriptor, Sid};
use crate::transport::{current_user, pipe_path, PipeTransport};

/// Default size of each pipe instance's input and output buffers.
pub const DEFAULT_BUFFER_SIZE: u32 = 64 * 1024;

/// Default number of instances waiting for clients: the backlog of
/// connections that can be made before [`PipeListener::accept`] is called.
pub const DEFAULT_BACKLOG: usize = 8;

/// How long [`PipeListener::bind_when_released`] gives a name that is held
/// to be released before it reports [`Error::AddressInUse`].
pub const RELEASE_WAIT: Duration = Duration::from_millis(250);

/// How a [`PipeListener`] creates its pipe. The default is secure: owner-only
/// access and remote clients rejected.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main] async fn main() -> ipc_core::Result<()> {
/// use ipc_windows::{PipeAccess, PipeListener, PipeOptions};
///
/// // Let the members of BUILTIN\Users connect too.
/// let options = PipeOptions::new().access(PipeAccess::Sids(vec!["S-1-5-32-545".into()]));
/// let _listener = PipeListener::bind_with(&"pipe:node-admin".parse()?, &options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PipeOptions {
    access: PipeAccess,
    reject_remote_clients: bool,
    buffer_size: u32,
    backlog: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            access: PipeAccess::OwnerOnly,
            reject_remote_clients: true,
            buffer_size: DEFAULT_BUFFER_SIZE,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

impl PipeOptions {
    /// The secure defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Who may open the pipe besides its owner and `SYSTEM`.
    pub fn access(mut self, access: PipeAccess) -> Self {
        self.access = access;
        self
    }

    /// Whether clients on other machines are refused (default `true`). Turn
    /// off only for a pipe meant to be reached over SMB.
    pub fn reject_remote_clients(mut self, reject: bool) -> Self {
        self.reject_remote_clients = reject;
        self
    }

    /// Size of each instance's input and output buffers, in bytes.
    pub fn buffer_size(mut self, bytes: u32) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// How many instances wait for clients at once (at least 1): clients
    /// beyond that before the next `accept` find the pipe busy and retry.
    pub fn backlog(mut self, instances: usize) -> Self {
        self.backlog = instances.max(1);
        self
    }

    /// The tokio options for instances after the first.
    pub(crate) fn server_options(&self) -> ServerOptions {
        let mut o = ServerOptions::new();
        // Message mode carries the zero-length message that stands for
        // end-of-stream (half-close); reads still see a byte stream.
        o.pipe_mode(PipeMode::Message)
            .reject_remote_clients(self.reject_remote_clients)
            .in_buffer_size(self.buffer_size)
            .out_buffer_size(self.buffer_size);
        o
    }
}

/// A named-pipe server endpoint, `\\.\pipe\<name>`.
///
/// The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so if
/// another process already serves the name (a squatter waiting to read what
/// clients send), binding fails with [`Error::AddressInUse`] instead of
/// silently sharing it. Every instance carries the security descriptor of
/// [`PipeOptions`] (owner-only by default) and rejects remote clients.
/// A backlog of instances ([`PipeOptions::backlog`]) always waits for
/// clients: a replacement is created before an accepted connection is handed
/// out, so clients do not find the pipe busy.
///
/// The pipe disappears when the listener and every accepted connection are
/// closed; there is no file to clean up.
pub struct PipeListener {
    addr: Address,
    path: String,
    options: ServerOptions,
    descriptor: SecurityDescriptor,
    me: &'static Sid,
    backlog: usize,
    /// Instances waiting for (or holding, not yet accepted) a client.
    waiting: Vec<NamedPipeServer>,
    closed: bool,
}

impl fmt::Debug for PipeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeListener")
            .field("path", &self.path)
            .field("descriptor", &self.descriptor.sddl())
            .field("waiting", &self.waiting.len())
            .field("closed", &self.closed)
            .finish()
    }
}

fn create_error(path: &str, e: io::Error) -> Error {
    match e.raw_os_error().map(|c| c as u32) {
        // With FILE_FLAG_FIRST_PIPE_INSTANCE, ACCESS_DENIED means the name exists.
        Some(ERROR_ACCESS_DENIED) | Some(ERROR_PIPE_BUSY) => {
            tracing::debug!(
                pipe = path,
                "the pipe name is held by other instances; refusing to share it"
            );
            Error::AddressInUse {
                endpoint: path.to_owned(),
            }
        }
        _ => Error::io(format!("creating named pipe {path}"), e),
    }
}

impl PipeListener {
    /// Binds `pipe:name` or `local:name` with the secure defaults.
    ///
    /// Must be called within a tokio runtime with I/O enabled.
    ///
    /// # Errors
    ///
    /// [`Error::AddressInUse`] when another process serves the name,
    /// [`Error::InvalidAddress`] for other address kinds.
    pub fn bind(addr: &Address) -> Result<Self> {
        Self::bind_with(addr, &PipeOptions::default())
    }

    /// Binds with explicit options.
    ///
    /// # Errors
    ///
    /// As [`PipeListener::bind`]; also an error naming the SID when
    /// [`PipeAccess::Sids`] holds a malformed one.
    pub fn bind_with(addr: &Address, options: &PipeOptions) -> Result<Self> {
        let path = pipe_path(addr)?;
        let me = current_user()?;
        let sddl = security::sddl(me, &options.access)?;
        let descriptor = SecurityDescriptor::from_sddl(&sddl)
            .map_err(|e| Error::io(format!("building the security descriptor {sddl}"), e))?;
        let server_options = options.server_options();
        let mut first = server_options.clone();
        first.first_pipe_instance(true);
        let server = descriptor
            .create_pipe(&first, &path)
            .map_err(|e| create_error(&path, e))?;
        // FILE_FLAG_FIRST_PIPE_INSTANCE already refuses an existing name; the
        // instance count also catches systems that ignore the flag.
        match sys::pipe_instances(&server) {
            Ok(1) => {}
            Ok(_) => {
                return Err(create_error(
                    &path,
                    io::Error::from_raw_os_error(ERROR_ACCESS_DENIED as i32),
                ))
            }
            Err(e) => return Err(Error::io(format!("checking {path} is ours alone"), e)),
        }
        tracing::debug!(pipe = %path, sddl = %sddl, "listening");
        let mut listener = PipeListener {
            addr: addr.clone(),
            path,
            options: server_options,
            descriptor,
            me,
            backlog: options.backlog,
            waiting: vec![server],
            closed: false,
        };
        listener.refill()?;
        Ok(listener)
    }

    /// As [`PipeListener::bind_with`], but a name that is held gets up to
    /// [`RELEASE_WAIT`] to be released before [`Error::AddressInUse`] is
    /// reported; the facade's `bind` uses this.
    ///
    /// Closing a listener, or dropping a connection, cancels its instances'
    /// pending I/O, and each instance's handle is released only once the
    /// runtime has processed that cancellation. Binding the same name again
    /// at once, without awaiting anything in between, finds them still
    /// there; this waits on the runtime, which releases them meanwhile.
    /// Every try still refuses to share the name with another server.
    ///
    /// # Errors
    ///
    /// As [`PipeListener::bind_with`]; [`Error::AddressInUse`] once the name
    /// has stayed held for [`RELEASE_WAIT`].
    pub async fn bind_when_released(addr: &Address, options: &PipeOptions) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        let mut delay = Duration::from_millis(1);
        loop {
            match Self::bind_with(addr, options) {
                Err(Error::AddressInUse { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(20));
                }
                bound => return bound,
            }
        }
    }

    /// The Windows path of the pipe, `\\.\pipe\<name>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The DACL of the live pipe, in SDDL form, as the OS reports it.
    ///
    /// # Errors
    ///
    /// When the listener is closed, or the OS refuses the query.
    pub fn dacl(&self) -> Result<String> {
        let server = self.waiting.first().ok_or(Error::Shutdown)?;
        sys::object_dacl_sddl(server)
            .map_err(|e| Error::io(format!("reading the security of {}", self.path), e))
    }

    fn new_instance(&self) -> Result<NamedPipeServer> {
        self.descriptor
            .create_pipe(&self.options, &self.path)
            .map_err(|e| create_error(&self.path, e))
    }

    /// Waits for the next client.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] after [`PipeListener::close`]; OS errors otherwise
    /// (the listener stays usable).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a client that connects while the future is dropped is
    /// returned by the next call.
    pub async fn accept(&mut self) -> Result<PipeTransport> {
        loop {
            if self.closed {
                return Err(Error::Shutdown);
            }
            self.refill()?;
            // Whichever waiting instance a client reached first. Each
            // `connect` is cancel safe, and a client that reaches an instance
            // while no accept runs is found by the next one.
            let (result, index) = {
                let connects = self.waiting.iter().map(|s| Box::pin(s.connect()));
                let (result, index, _others) = futures::future::select_all(connects).await;
                (result, index)
            };
            let connected = self.waiting.swap_remove(index);
            match result {
                Ok(()) => {}
                // The client connected and left before we looked: replace the instance.
                Err(e) if e.raw_os_error() == Some(ERROR_NO_DATA as i32) => continue,
                Err(e) => return Err(Error::io(format!("accepting on {}", self.path), e)),
            }
            // Replacements wait before this connection is handed out, so
            // clients do not find the pipe busy. If one cannot be made now,
            // the next accept retries and reports the error.
            if let Err(e) = self.refill() {
                tracing::warn!(pipe = %self.path, error = %e, "creating the next pipe instance failed");
            }
            let peer = client_peer(&connected, self.me);
            tracing::debug!(pipe = %self.path, %peer, "accepted");
            return Ok(PipeTransport::from_server(connected, peer));
        }
    }

    /// Creates instances until `backlog` wait for clients.
    fn refill(&mut self) -> Result<()> {
        while self.waiting.len() < self.backlog {
            let instance = self.new_instance()?;
            self.waiting.push(instance);
        }
        Ok(())
    }

    /// Stops listening: the waiting instances are closed, so new clients
    /// find no server. Accepted connections are unaffected. Idempotent; also
    /// done on drop.
    ///
    /// While accepted connections stay open the pipe's name still exists (a
    /// name lives as long as any of its instances): new clients are then
    /// refused as busy rather than not found, and [`connect`](crate::connect)
    /// says both causes when it gives up.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let instances = self.waiting.len();
        self.waiting.clear();
        // An instance whose connect is pending (an accept was started and
        // dropped) keeps its handle after the drop until the runtime has
        // processed the cancelled connect, and would take a client meanwhile.
        // Taking each such instance ourselves, and letting go at once, leaves
        // none listening: a client then finds the name busy for a moment, then
        // gone. Only instances of ours can listen under the name: every bind
        // takes it with the first-instance flag.
        sys::take_listening_instances(&self.path, instances);
    }
}

impl Drop for PipeListener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Who is on the other end of an accepted instance. An identity that cannot
/// be read is reported as unknown and not the same user.
fn client_peer(server: &NamedPipeServer, me: &Sid) -> PeerInfo {
    let pid = sys::pipe_client_pid(server)
        .map_err(|e| tracing::debug!(error = %e, "client process id unavailable"))
        .ok();
    let sid = sys::pipe_client_user(server)
        .or_else(|e| {
            tracing::debug!(error = %e, "impersonating the client failed; reading its process token");
            pid.ok_or(e).and_then(sys::process_user)
        })
        .map_err(|e| tracing::debug!(error = %e, "client user unavailable"))
        .ok();
    let same_user = sid.as_ref() == Some(me);
    PeerInfo::windows(pid, sid.map(|s| s.to_string()), same_user)
}

#[async_trait]
impl Listener for PipeListener {
    async fn accept(&mut self) -> Result<BoxTransport> {
        Ok(Box::new(PipeListener::accept(self).await?))
    }

    fn local_addr(&self) -> &Address {
        &self.addr
    }

    fn close(&mut self) -> Result<()> {
        PipeListener::close(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_clients_are_rejected_by_default() {
        let o = format!("{:?}", PipeOptions::default().server_options());
        assert!(o.contains("reject_remote_clients: true"), "{o}");
        let o = format!(
            "{:?}",
            PipeOptions::default()
                .reject_remote_clients(false)
                .server_options()
        );
        assert!(o.contains("reject_remote_clients: false"), "{o}");
    }

    #[test]
    fn defaults_are_owner_only_message_mode() {
        let d = PipeOptions::default();
        assert_eq!(d.access, PipeAccess::OwnerOnly);
        assert_eq!(d.backlog, DEFAULT_BACKLOG);
        assert_eq!(PipeOptions::new().backlog(0).backlog, 1);
        let o = format!("{:?}", d.server_options());
        assert!(o.contains("pipe_mode: Message"), "{o}");
        assert!(o.contains("first_pipe_instance: false"), "{o}");
    }
}
