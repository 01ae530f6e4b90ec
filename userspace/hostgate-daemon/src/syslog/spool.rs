//! The on-disk spool between the log and the syslog receiver: every frame
//! is appended before it is sent, and a frame leaves only once the
//! receiver has had it (see `ship.rs`), so that a receiver that is away or
//! restarting loses nothing, and neither does a restarting daemon.
//!
//! Frames are addressed by a byte position that only grows. They are
//! appended to segment files named by the position they start at
//! (`<position>.seg`, at most `SEGMENT` bytes each, a frame never spans
//! two); `cursor` holds the position up to which the receiver has them.
//! Segments wholly below the cursor are deleted; beyond `max_bytes` the
//! oldest segment goes even if unsent (bounded disk), and the loss is
//! counted.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use super::frame::complete_frames;

/// Size at which a segment is closed and the next begun.
const SEGMENT: u64 = 1 << 20;

pub struct Spool {
    dir: PathBuf,
    /// Start positions of the segments on disk, oldest first.
    segments: Vec<u64>,
    /// Where the next frame goes.
    end: u64,
    /// Everything below has reached the receiver.
    committed: u64,
    max_bytes: u64,
    /// The open last segment.
    tail: Option<File>,
    /// Bytes deleted unsent since the last `take_dropped`.
    dropped: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`. A frame torn by a crash at
    /// the end of the last segment is cut off.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let mut end = 0;
        if let Some(&last) = segments.last() {
            let path = seg_path(dir, last);
            let bytes = fs::read(&path)?;
            let (whole, _) = complete_frames(&bytes);
            if whole < bytes.len() {
                OpenOptions::new().write(true).open(&path)?.set_len(whole as u64)?;
            }
            end = last + whole as u64;
        }
        let committed = match fs::read_to_string(dir.join("cursor")) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let first = segments.first().copied().unwrap_or(end);
        let committed = committed.clamp(first, end);
        Ok(Spool { dir: dir.to_path_buf(), segments, end, committed, max_bytes, tail: None, dropped: 0 })
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Bytes lost to the size bound since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Appends one whole frame (one write, so a crash tears at most this one).
    pub fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        let last = self.segments.last().copied();
        let roll = match last {
            None => true,
            Some(start) => self.end - start + frame.len() as u64 > SEGMENT && self.end > start,
        };
        if roll {
            self.segments.push(self.end);
            self.tail = None;
        }
        if self.tail.is_none() {
            let start = *self.segments.last().unwrap_or(&self.end);
            self.tail = Some(OpenOptions::new().create(true).append(true).open(seg_path(&self.dir, start))?);
        }
        if let Some(f) = self.tail.as_mut() {
            f.write_all(frame)?;
        }
        self.end += frame.len() as u64;
        self.enforce_bound()
    }

    /// Drops the oldest segments while the spool is over its bound (never
    /// the one being written).
    fn enforce_bound(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 && self.end - self.segments[0] > self.max_bytes {
            let gone = self.segments.remove(0);
            let next = self.segments[0];
            if self.committed < next {
                self.dropped += next - self.committed;
                self.committed = next;
                self.write_cursor()?;
            }
            remove(&seg_path(&self.dir, gone))?;
        }
        Ok(())
    }

    /// Up to about `max` bytes of whole frames from `pos` (at least one
    /// frame if any, however long): (bytes, the position after them). A
    /// position below the oldest segment (dropped for the bound meanwhile)
    /// reads from the oldest. Segments are contiguous: each ends where the
    /// next begins.
    pub fn read(&self, pos: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let mut pos = pos.max(self.segments.first().copied().unwrap_or(self.end));
        let mut out = Vec::new();
        while pos < self.end && out.len() < max {
            let Some(i) = self.segments.iter().rposition(|s| *s <= pos) else { break };
            let start = self.segments[i];
            let seg_end = self.segments.get(i + 1).copied().unwrap_or(self.end);
            let left = seg_end - pos;
            let want = if out.is_empty() { left } else { left.min((max - out.len()) as u64) };
            let mut f = File::open(seg_path(&self.dir, start))?;
            f.seek(SeekFrom::Start(pos - start))?;
            let mut buf = Vec::new();
            f.take(want).read_to_end(&mut buf)?;
            let (whole, n) = complete_frames(&buf);
            if n == 0 {
                break;
            }
            // Not more than `max` unless a single frame is longer.
            let mut taken = 0;
            while taken < whole {
                let len = first_frame_len(&buf[taken..]).unwrap_or(whole - taken);
                if taken > 0 && out.len() + taken + len > max {
                    break;
                }
                taken += len;
            }
            out.extend_from_slice(&buf[..taken]);
            pos += taken as u64;
            if taken < buf.len() {
                break;
            }
        }
        Ok((out, pos))
    }

    /// The receiver has everything below `pos`: remember it (atomically,
    /// it survives a restart) and delete the segments it covers.
    pub fn commit(&mut self, pos: u64) -> io::Result<()> {
        if pos <= self.committed {
            return Ok(());
        }
        self.committed = pos.min(self.end);
        self.write_cursor()?;
        while self.segments.len() > 1 && self.segments[1] <= self.committed {
            let gone = self.segments.remove(0);
            remove(&seg_path(&self.dir, gone))?;
        }
        Ok(())
    }

    fn write_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{}\n", self.committed))?;
        fs::rename(tmp, self.dir.join("cursor"))
    }
}

fn seg_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.seg"))
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Length of the first frame in `buf`, if whole.
fn first_frame_len(buf: &[u8]) -> Option<usize> {
    let space = buf.iter().take(11).position(|b| *b == b' ')?;
    let len: usize = std::str::from_utf8(&buf[..space]).ok()?.parse().ok()?;
    (buf.len() >= space + 1 + len).then_some(space + 1 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: usize, pad: usize) -> Vec<u8> {
        let msg = format!("line {i} {}", "x".repeat(pad));
        format!("{} {msg}", msg.len()).into_bytes()
    }

    /// Every frame read back from `from`, in order.
    fn drain(s: &Spool, from: u64, chunk: usize) -> Vec<String> {
        let mut pos = from;
        let mut out = vec![];
        loop {
            let (bytes, next) = s.read(pos, chunk).expect("read");
            if bytes.is_empty() {
                return out;
            }
            let mut at = 0;
            while let Some(len) = first_frame_len(&bytes[at..]) {
                let text = String::from_utf8_lossy(&bytes[at..at + len]).into_owned();
                out.push(text.split(' ').nth(2).expect("number").to_string());
                at += len;
            }
            assert_eq!(at, bytes.len(), "whole frames only");
            pos = next;
        }
    }

    #[test]
    fn frames_survive_reopen_and_leave_after_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = Spool::open(dir.path(), 64 << 20).expect("open");
        // Spans several segments.
        for i in 0..3000 {
            s.append(&frame(i, 1000)).expect("append");
        }
        assert!(s.segments.len() > 2);
        assert_eq!(drain(&s, 0, 65536), (0..3000).map(|i| i.to_string()).collect::<Vec<_>>());
        // Commit half, reopen: the rest is still there, nothing before.
        let (_, half) = s.read(0, 1_500_000).expect("read");
        s.commit(half).expect("commit");
        drop(s);
        let s = Spool::open(dir.path(), 64 << 20).expect("reopen");
        assert_eq!(s.committed(), half);
        let rest = drain(&s, s.committed(), 4096);
        assert_eq!(rest.last().map(String::as_str), Some("2999"));
        let first: usize = rest[0].parse().expect("n");
        assert_eq!(rest.len(), 3000 - first);
        assert!(s.segments.len() < 4, "committed segments deleted: {:?}", s.segments);
    }

    #[test]
    fn a_torn_frame_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        s.append(&frame(1, 0)).expect("append");
        s.append(&frame(2, 0)[..5]).expect("torn write");
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        s.append(&frame(3, 0)).expect("append");
        assert_eq!(drain(&s, 0, 100), ["1", "3"]);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = Spool::open(dir.path(), 2 << 20).expect("open");
        for i in 0..6000 {
            s.append(&frame(i, 1000)).expect("append");
        }
        let on_disk: u64 =
            fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").metadata().expect("meta").len()).sum();
        assert!(on_disk <= (3 << 20) + 100, "bounded: {on_disk}");
        assert!(s.take_dropped() > 0);
        let left = drain(&s, 0, 1 << 20);
        assert_eq!(left.last().map(String::as_str), Some("5999"));
        // What is left is contiguous.
        let first: usize = left[0].parse().expect("n");
        assert_eq!(left.len(), 6000 - first);
    }
}
