//! Reading the journal at open in pieces, not whole: a journal of a million commits is 122 MB,
//! and holding it all while the replay builds the jobs doubled what recovery took from the
//! machine (and the page faults it paid for that memory).
//!
//! The reader keeps a window of the file from the frame being read on, and gives
//! [`next_frame`] the window. A valid frame depends on its own bytes only, so a frame found
//! whole in the window is the frame the whole file holds there. Anything else (the end, a torn
//! or damaged frame, a frame longer than the window) may depend on what follows, up to the end
//! of the file (whether a frame follows a damaged frame, whether a whole one ends the file): the window then grows, and
//! only an answer given with the window reaching the end of the file, or holding more than the
//! largest frame (past which nothing changes the answer), is taken. So the answers
//! are those `next_frame` gives over the whole file, which `tests` check for every way of
//! cutting a damaged journal into pieces.

use std::io::{self, Read};

use super::frame::{
    FRAME_HEADER_LEN, Layout, MAX_FRAME, Next, TRAILER_LEN, checked_frame_len, next_frame, word,
};

/// How many bytes from a frame's start decide what [`next_frame`] says there, whatever follows
/// them: a whole frame of the largest size (with a trailer) and one byte after it.
const DECIDED_AFTER: usize = FRAME_HEADER_LEN + MAX_FRAME as usize + TRAILER_LEN;

/// A journal being read, from its start, in pieces of at least `piece` bytes.
pub(crate) struct JournalReader<R> {
    source: R,
    /// The file's length when it was opened: nothing past it is read (a writer may be
    /// appending, under a read-only inspection).
    len: u64,
    /// Bytes read from `source` so far.
    read: u64,
    /// The file from offset `base` on, as far as it was read. (Offsets in the file are `u64`:
    /// a journal may be longer than a 32-bit target's `usize` reaches; the window is not.)
    window: Vec<u8>,
    base: u64,
    piece: usize,
    /// What follows a frame's payload in this journal (its format's).
    layout: Layout,
}

impl<R: Read> JournalReader<R> {
    /// A reader of `source`, a file of `len` bytes. Its frames are of format 2's layout until
    /// [`JournalReader::set_layout`] says otherwise (the header, read first, says which).
    pub(crate) fn new(source: R, len: u64, piece: usize) -> Self {
        Self {
            source,
            len,
            read: 0,
            window: Vec::new(),
            base: 0,
            piece: piece.max(1),
            layout: Layout::Plain,
        }
    }

    /// Reads the frames from now on as of `layout`.
    pub(crate) fn set_layout(&mut self, layout: Layout) {
        self.layout = layout;
    }

    /// The file's length when it was opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window reaches the end of the file.
    fn at_end(&self) -> bool {
        self.read >= self.len
    }

    /// The file's first `n` bytes (fewer if the file is shorter).
    pub(crate) fn start(&mut self, n: usize) -> io::Result<&[u8]> {
        self.fill(0, n)?;
        let end = n.min(self.window.len());
        Ok(&self.window[..end])
    }

    /// Where offset `at` (≥ the window's start) is in the window: past its end if it is not in
    /// it.
    fn relative(&self, at: u64) -> usize {
        usize::try_from(at.saturating_sub(self.base)).unwrap_or(usize::MAX)
    }

    /// How many bytes the window holds from offset `at` on.
    fn have(&self, at: u64) -> usize {
        self.window.len().saturating_sub(self.relative(at))
    }

    /// Makes the window hold at least `need` bytes from offset `at` (`at` ≥ the window's
    /// start), or everything to the end of the file; drops what lies before `at` first.
    fn fill(&mut self, at: u64, need: usize) -> io::Result<()> {
        let have = self.have(at);
        if have >= need || self.at_end() {
            return Ok(());
        }
        let consumed = self.relative(at).min(self.window.len());
        self.window.drain(..consumed);
        self.base += consumed as u64;
        let more = (need - have).max(self.piece) as u64;
        let more = more.min(self.len - self.read);
        self.window
            .reserve(usize::try_from(more).unwrap_or(usize::MAX));
        let got = (&mut self.source)
            .take(more)
            .read_to_end(&mut self.window)?;
        self.read += got as u64;
        if (got as u64) < more {
            // The file is shorter than it was at open (cut by a writer): it ends here.
            self.len = self.read;
        }
        Ok(())
    }

    /// What the file holds at offset `at` (the end of the previous frame, or of the header),
    /// as [`next_frame`] would say over the whole file; a frame's `end` is an offset in the file.
    pub(crate) fn next(&mut self, at: u64, salt: u64) -> io::Result<Next<'_, u64>> {
        // The common case first: the next frame is whole in the window, and valid.
        let relative = self.relative(at);
        let layout = self.layout;
        let trailer = layout.trailer_len();
        if let Some(rest) = self.window.get(relative..)
            && let Some(header) = rest.get(..FRAME_HEADER_LEN)
            && layout.overhead().saturating_add(word(header) as usize) <= rest.len()
            && let Next::Frame { payload, end } = next_frame(&self.window, relative, salt, layout)
        {
            let start = end - trailer - payload.len();
            return Ok(Next::Frame {
                payload: &self.window[start..end - trailer],
                end: self.base + end as u64,
            });
        }
        // Else a frame header first; then its whole frame (the window is refilled, a piece at a
        // time, only when the next frame is not in it: what is moved to its front then is less
        // than a frame).
        let mut need = FRAME_HEADER_LEN;
        loop {
            self.fill(at, need)?;
            let relative = self.relative(at);
            let have = self.have(at);
            let rest = self.window.get(relative..).unwrap_or_default();
            // A frame whose header holds is read whole before it is asked about: a frame longer
            // than the window would otherwise be scanned for headers as if it were damaged.
            // (Its length is checked only when it reaches past the window.)
            let claimed = rest.get(..4).map_or(0, |w| word(w) as usize);
            if layout.overhead().saturating_add(claimed) > have
                && !self.at_end()
                && let Some(whole) = checked_frame_len(rest, layout)
            {
                need = whole;
                continue;
            }
            // Told apart first, the window borrowed only for the answer that is taken.
            let found = match next_frame(&self.window, relative, salt, layout) {
                Next::Frame { payload, end } => Some((end - trailer - payload.len(), end)),
                _ => None,
            };
            if let Some((start, end)) = found {
                return Ok(Next::Frame {
                    payload: &self.window[start..end - trailer],
                    end: self.base + end as u64,
                });
            }
            // With more than a frame's worth in the window, what follows changes nothing:
            // whatever the header says, the frame is whole in the window or damaged with data
            // after it (a sparse 4 TiB journal is refused after 64 MiB, not read to its end).
            if self.at_end() || have > DECIDED_AFTER {
                return Ok(next_frame(&self.window, relative, salt, layout).in_file(self.base));
            }
            // Not a whole frame in the window, and the file goes on: the answer may depend on
            // what follows. A larger window (doubling: a frame of up to 64 MiB is read in a
            // few steps, damage to the end of the file in a few more).
            need = have
                .saturating_mul(2)
                .max(self.piece)
                .min(DECIDED_AFTER + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::frame::{
        HEADER_LEN, JOURNAL_MAGIC, Layout, Next, header, next_frame, push_frame,
    };
    use super::super::sim::Rng;
    use super::JournalReader;

    /// What reading `bytes` from the header on yields, frame by frame, as `Journal::open` reads:
    /// each frame's payload and end, then how it ended.
    fn outcomes(next: &mut dyn FnMut(usize, u64) -> (String, Option<usize>)) -> Vec<String> {
        let mut seen = Vec::new();
        let mut at = HEADER_LEN;
        for salt in 1.. {
            let (what, end) = next(at, salt);
            seen.push(what);
            match end {
                Some(end) => at = end,
                None => break,
            }
        }
        seen
    }

    fn describe(next: Next<'_>) -> (String, Option<usize>) {
        match next {
            Next::Frame { payload, end } => (format!("frame {payload:?} to {end}"), Some(end)),
            other => (format!("{other:?}"), None),
        }
    }

    /// Both layouts: format 2's journals, and format 3's trailed ones.
    const LAYOUTS: [Layout; 2] = [Layout::Plain, Layout::Trailed];

    fn whole(bytes: &[u8], layout: Layout) -> Vec<String> {
        outcomes(&mut |at, salt| describe(next_frame(bytes, at, salt, layout)))
    }

    /// [`describe`] of the reader's answer, whose offsets are `u64`.
    fn describe_read(next: Next<'_, u64>) -> (String, Option<usize>) {
        describe(match next {
            Next::Frame { payload, end } => Next::Frame {
                payload,
                end: usize::try_from(end).unwrap(),
            },
            Next::End => Next::End,
            Next::TornTail(why) => Next::TornTail(why),
            Next::Corrupt(why) => Next::Corrupt(why),
        })
    }

    fn reader(bytes: &[u8], len: u64, piece: usize, layout: Layout) -> JournalReader<&[u8]> {
        let mut reader = JournalReader::new(bytes, len, piece);
        reader.set_layout(layout);
        reader
    }

    fn in_pieces(bytes: &[u8], piece: usize, layout: Layout) -> Vec<String> {
        let mut reader = reader(bytes, bytes.len() as u64, piece, layout);
        let start = reader.start(HEADER_LEN).unwrap().to_vec();
        assert_eq!(start, bytes[..HEADER_LEN.min(bytes.len())]);
        outcomes(&mut |at, salt| describe_read(reader.next(at as u64, salt).unwrap()))
    }

    /// A journal of `frames` frames of random sizes (some larger than the pieces).
    fn journal(rng: &mut Rng, frames: u64, layout: Layout) -> Vec<u8> {
        let mut bytes = header(JOURNAL_MAGIC, 0).to_vec();
        for salt in 1..=frames {
            let longest = if rng.chance(1, 8) { 300 } else { 40 };
            let len = 1 + rng.below(longest) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            push_frame(&mut bytes, &payload, salt, layout);
        }
        bytes
    }

    /// Damage as the file store's tests and a crash leave it: a cut, a flipped bit, zeros,
    /// garbage appended, a frame's bytes copied elsewhere.
    fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
        let len = bytes.len() as u64;
        match rng.below(5) {
            0 => bytes.truncate(HEADER_LEN + rng.below(len - HEADER_LEN as u64 + 1) as usize),
            1 => {
                let at = HEADER_LEN + rng.below(len - HEADER_LEN as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            2 => {
                let at = HEADER_LEN + rng.below(len - HEADER_LEN as u64) as usize;
                let n = (1 + rng.below(64) as usize).min(bytes.len() - at);
                bytes[at..at + n].fill(0);
            }
            3 => bytes.extend((0..1 + rng.below(40)).map(|_| rng.below(256) as u8)),
            _ => {
                let from = HEADER_LEN + rng.below(len - HEADER_LEN as u64) as usize;
                let n = (1 + rng.below(80) as usize).min(bytes.len() - from);
                let chunk = bytes[from..from + n].to_vec();
                let to = HEADER_LEN + rng.below(len - HEADER_LEN as u64 - n as u64 + 1) as usize;
                bytes[to..to + n].copy_from_slice(&chunk);
            }
        }
    }

    #[test]
    fn a_journal_read_in_pieces_reads_as_the_whole_file_does() {
        // `JOBSTATE_PROPTEST_MULTIPLIER=100` runs 100 times more.
        let multiplier: u64 = std::env::var("JOBSTATE_PROPTEST_MULTIPLIER")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(1);
        let cases = 400 * multiplier;
        let pieces = [1, 2, 3, 11, 12, 13, 50, 257, 4096];
        let (mut intact, mut damaged) = (0, 0);
        for (case, layout) in (0..cases).flat_map(|case| LAYOUTS.map(|layout| (case, layout))) {
            let mut rng = Rng::new(0x6a6f_7572 ^ case);
            let frames = rng.below(12);
            let mut bytes = journal(&mut rng, frames, layout);
            if case % 4 != 0 && bytes.len() > HEADER_LEN {
                for _ in 0..1 + rng.below(2) {
                    if bytes.len() > HEADER_LEN + 1 {
                        damage(&mut rng, &mut bytes);
                    }
                }
                damaged += 1;
            } else {
                intact += 1;
            }
            let expected = whole(&bytes, layout);
            for piece in pieces {
                assert_eq!(
                    in_pieces(&bytes, piece, layout),
                    expected,
                    "case {case} ({layout:?}), pieces of {piece} bytes"
                );
            }
        }
        // To stderr itself, past the test harness's capture: the figure shows in a plain run.
        let _ = writeln!(
            std::io::stderr(),
            "journal reader: {cases} journals in each of {} layouts ({intact} intact, {damaged} damaged) read in pieces of {pieces:?} bytes, each as the whole file reads",
            LAYOUTS.len()
        );
    }

    #[test]
    fn a_file_shorter_than_at_open_ends_where_it_ends() {
        for layout in LAYOUTS {
            let mut rng = Rng::new(7);
            let bytes = journal(&mut rng, 6, layout);
            let cut = bytes.len() - 5;
            // Opened at its full length, then cut by a writer: the reader sees the cut file end.
            let mut reader = reader(&bytes[..cut], bytes.len() as u64, 16, layout);
            let read =
                outcomes(&mut |at, salt| describe_read(reader.next(at as u64, salt).unwrap()));
            assert_eq!(read, whole(&bytes[..cut], layout));
            assert_eq!(reader.len(), cut as u64);
        }
    }

    /// A file longer than it was at open (a writer appending under a read-only inspection):
    /// nothing past its length at open is read, whatever the pieces.
    #[test]
    fn a_file_longer_than_at_open_is_read_to_its_length_at_open() {
        for layout in LAYOUTS {
            let mut rng = Rng::new(11);
            let bytes = journal(&mut rng, 8, layout);
            let (mut at, mut salt) = (HEADER_LEN, 1);
            // The length at open: after the fourth frame.
            while salt <= 4 {
                let Next::Frame { end, .. } = next_frame(&bytes, at, salt, layout) else {
                    panic!("frame {salt}")
                };
                (at, salt) = (end, salt + 1);
            }
            assert!(at < bytes.len());
            for piece in [1, 7, 64, 4096] {
                let mut reader = reader(&bytes[..], at as u64, piece, layout);
                let read =
                    outcomes(&mut |at, salt| describe_read(reader.next(at as u64, salt).unwrap()));
                assert_eq!(read, whole(&bytes[..at], layout), "pieces of {piece} bytes");
                assert_eq!(read.len(), 5, "four frames, then the end: {read:?}");
            }
        }
    }

    /// The reader reads a frame to its end and no further (a piece at most past it): a frame
    /// whose header holds is read exactly, not by doubling the window nor to the end of the
    /// file, whatever its size against the pieces.
    #[test]
    fn a_frame_is_read_to_its_end_and_no_further() {
        for layout in LAYOUTS {
            a_frame_is_read_to_its_end_and_no_further_in(layout);
        }
    }

    fn a_frame_is_read_to_its_end_and_no_further_in(layout: Layout) {
        let mut bytes = header(JOURNAL_MAGIC, 0).to_vec();
        for (salt, len) in (1..).zip([40, 3000, 1, 700, 5]) {
            let payload: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
            push_frame(&mut bytes, &payload, salt, layout);
        }
        for piece in [1, 12, 64] {
            let mut reader = reader(&bytes[..], bytes.len() as u64, piece, layout);
            let _ = reader.start(HEADER_LEN).unwrap();
            let (mut at, mut frames) = (HEADER_LEN as u64, 0);
            for salt in 1.. {
                match reader.next(at, salt).unwrap() {
                    Next::Frame { end, .. } => {
                        assert!(
                            reader.read < end + piece as u64,
                            "pieces of {piece}: {} bytes read for a frame ending at {end}",
                            reader.read
                        );
                        (at, frames) = (end, frames + 1);
                    }
                    other => {
                        assert_eq!(other, Next::End);
                        break;
                    }
                }
            }
            assert_eq!(frames, 5);
        }
    }
}
