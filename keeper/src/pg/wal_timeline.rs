//! The timeline of the newest WAL a standby holds, read from `pg_wal`.
//!
//! Elections rank standbys by (timeline, LSN). A streaming standby's WAL
//! receiver names the timeline it receives, but once the stream is gone (the
//! very moment an election asks) nothing SQL offers is current: the last
//! restartpoint's and the minimum recovery point's timelines lag a timeline
//! switch by up to `checkpoint_timeout`. The WAL files do not: the receiver
//! writes each segment under the name of the timeline it streams, so the
//! segment holding the standby's last byte, under the highest timeline whose
//! file really holds that page, says where the standby is.
//!
//! A file of a higher timeline for the same segment can only be a recycled
//! one (renamed ahead for reuse, still full of old pages) or one created and
//! not yet written that far: the page header's address tells them apart
//! (`xlp_pageaddr`, the WAL position the page was written for).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of a WAL page header read: `xlp_magic` (u16), `xlp_info` (u16),
/// `xlp_tli` (u32), `xlp_pageaddr` (u64), in the server's byte order.
const HEADER_BYTES: usize = 16;

/// The timeline of the file in `pg_wal` that holds the WAL byte just before
/// `lsn`, or None when no file there holds it (or the sizes make no sense).
pub(super) fn newest_wal_timeline(
    pg_wal: &Path,
    lsn: u64,
    segment_size: u64,
    page_size: u64,
) -> Option<u32> {
    let place = Place::of(lsn, segment_size, page_size)?;
    let mut timelines: Vec<u32> = std::fs::read_dir(pg_wal)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| place.timeline_of(&name))
        .collect();
    timelines.sort_unstable_by(|a, b| b.cmp(a));
    timelines.into_iter().find(|&tli| {
        let path = pg_wal.join(segment_file_name(tli, place.segno, segment_size));
        read_header(&path, place.page_offset).is_some_and(|h| place.holds(&h))
    })
}

/// Where the byte before an LSN lives: its segment and the page in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    segno: u64,
    /// Offset of the page within the segment file.
    page_offset: u64,
    /// The WAL position the page starts at.
    page_lsn: u64,
    /// The file name without its timeline (16 hex digits).
    suffix: String,
}

impl Place {
    fn of(lsn: u64, segment_size: u64, page_size: u64) -> Option<Place> {
        let valid = |size: u64| size.is_power_of_two() && size >= 512;
        if lsn == 0 || !valid(segment_size) || !valid(page_size) || page_size > segment_size {
            return None;
        }
        let last = lsn - 1;
        let segno = last / segment_size;
        let page_offset = (last % segment_size) / page_size * page_size;
        let name = segment_file_name(0, segno, segment_size);
        Some(Place {
            segno,
            page_offset,
            page_lsn: segno * segment_size + page_offset,
            suffix: name[8..].to_string(),
        })
    }

    /// The timeline of a file name of this segment; None for other files.
    fn timeline_of(&self, name: &str) -> Option<u32> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if !name[8..].eq_ignore_ascii_case(&self.suffix) {
            return None;
        }
        u32::from_str_radix(&name[..8], 16).ok()
    }

    /// The page header was written for this page.
    fn holds(&self, header: &[u8; HEADER_BYTES]) -> bool {
        let addr = u64::from_ne_bytes(header[8..16].try_into().expect("8 bytes"));
        addr == self.page_lsn
    }
}

/// PostgreSQL's WAL file name (`XLogFileName`).
fn segment_file_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

fn read_header(path: &Path, offset: u64) -> Option<[u8; HEADER_BYTES]> {
    let file = File::open(path).ok()?;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, offset).ok()?;
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const PAGE: u64 = 8192;

    /// A segment file whose pages up to `written` (bytes) carry headers for
    /// `first_lsn` onwards (a recycled file: for an older position).
    fn segment(dir: &Path, tli: u32, segno: u64, first_lsn: u64, written: u64) {
        let mut bytes = vec![0u8; SEG as usize];
        let mut off = 0;
        while off < written {
            bytes[off as usize..off as usize + 2].copy_from_slice(&0xD110u16.to_ne_bytes());
            bytes[off as usize + 4..off as usize + 8].copy_from_slice(&tli.to_ne_bytes());
            bytes[off as usize + 8..off as usize + 16]
                .copy_from_slice(&(first_lsn + off).to_ne_bytes());
            off += PAGE;
        }
        std::fs::write(dir.join(segment_file_name(tli, segno, SEG)), bytes).unwrap();
    }

    #[test]
    fn file_names_are_postgresqls() {
        assert_eq!(
            segment_file_name(2, 3, 16 << 20),
            "000000020000000000000003"
        );
        assert_eq!(
            segment_file_name(0x1A, 0x1_0000_0005, 16 << 20),
            "0000001A0100000000000005"
        );
        assert_eq!(
            segment_file_name(1, 4097, 1 << 20),
            "000000010000000100000001"
        );
    }

    #[test]
    fn the_page_of_the_last_byte() {
        let p = Place::of(3 * SEG + PAGE + 10, SEG, PAGE).unwrap();
        assert_eq!(
            (p.segno, p.page_offset, p.page_lsn),
            (3, PAGE, 3 * SEG + PAGE)
        );
        // An LSN at a segment boundary ends in the segment before.
        let p = Place::of(4 * SEG, SEG, PAGE).unwrap();
        assert_eq!((p.segno, p.page_offset), (3, SEG - PAGE));
        assert_eq!(Place::of(0, SEG, PAGE), None);
        assert_eq!(Place::of(100, 3000, PAGE), None);
    }

    /// A standby that followed a timeline switch inside segment 3: both
    /// files exist, the later timeline's holds its last page.
    #[test]
    fn a_standby_past_a_switch_is_on_the_later_timeline() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1, 3, 3 * SEG, 4 * PAGE);
        segment(dir.path(), 2, 3, 3 * SEG, 6 * PAGE);
        std::fs::write(
            dir.path().join("00000002.history"),
            "1\t0/304000\tno recovery target\n",
        )
        .unwrap();
        let end = 3 * SEG + 5 * PAGE + 100;
        assert_eq!(newest_wal_timeline(dir.path(), end, SEG, PAGE), Some(2));
    }

    /// A standby that diverged (it holds more of timeline 1 than where 2
    /// forked) never received timeline 2's segment: it is on timeline 1.
    /// A recycled file named for the segment under a later timeline, or
    /// one not written that far, does not count.
    #[test]
    fn only_a_file_that_holds_the_page_counts() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1, 3, 3 * SEG, 8 * PAGE);
        let end = 3 * SEG + 7 * PAGE + 1;
        assert_eq!(newest_wal_timeline(dir.path(), end, SEG, PAGE), Some(1));
        // Recycled: pages of segment 1.
        segment(dir.path(), 3, 3, SEG, SEG);
        // Created, written only to page 2.
        segment(dir.path(), 2, 3, 3 * SEG, 2 * PAGE);
        assert_eq!(newest_wal_timeline(dir.path(), end, SEG, PAGE), Some(1));
        // Nothing holds a byte past the files.
        assert_eq!(newest_wal_timeline(dir.path(), 5 * SEG, SEG, PAGE), None);
        assert_eq!(
            newest_wal_timeline(&dir.path().join("missing"), end, SEG, PAGE),
            None
        );
    }
}
