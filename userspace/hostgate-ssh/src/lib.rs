//! The pure parts of hostgate's SSH/SFTP proxy (issue #11), apart from the
//! russh sessions in the daemon so that they are tested without a socket:
//!
//! - [`authorized`]: customer keys as OpenSSH `authorized_keys` lines, with
//!   the options the proxy enforces (`from=`) and the key types it accepts;
//! - [`route`]: which container an authenticated key may reach under the
//!   SSH user it asked for;
//! - [`throttle`]: per-source throttling and temporary bans of failed
//!   authentications, with time passed in;
//! - [`limits`]: concurrent sessions per customer;
//! - [`banner`]: which ciphers to offer a client, from its identification string.

pub mod authorized;
pub mod banner;
pub mod limits;
pub mod route;
pub mod throttle;

pub use authorized::{AuthorizedKey, KeyError};
pub use limits::SessionLimits;
pub use route::{check_user_name, route, Denied, KeyGrant};
pub use throttle::{Throttle, ThrottleConfig, Verdict};
