//! How fragmented memory is: free blocks per zone and order from
//! /proc/buddyinfo, split by migrate type from /proc/pagetypeinfo (readable
//! by root only). Malformed lines are skipped, never fatal.

use std::fs;

use crate::model::{ZoneFree, ZoneSnapshot};

const BUDDYINFO: &str = "/proc/buddyinfo";
const PAGETYPEINFO: &str = "/proc/pagetypeinfo";
const FREE_PAGES_SECTION: &str = "Free pages count per migrate type at order";

/// One zone's free blocks of one migrate type, order 0 first.
pub type MigratetypeFree = (u32, String, String, Vec<u64>);

/// `Node 0, zone   Normal   4654   2621 ...` lines.
pub fn parse_buddyinfo(text: &str) -> Vec<ZoneFree> {
    text.lines()
        .filter_map(|line| {
            let (node, rest) = line.split_once(',')?;
            let node = parse_node(node)?;
            let mut words = rest.trim().strip_prefix("zone")?.split_whitespace();
            let zone = words.next()?.to_string();
            let free_blocks = parse_counts(words)?;
            Some(ZoneFree { node, zone, free_blocks, by_migratetype: Vec::new() })
        })
        .collect()
}

/// The "Free pages count per migrate type at order" section:
/// `Node    0, zone   Normal, type    Unmovable     97    284 ...`.
pub fn parse_pagetypeinfo(text: &str) -> Vec<MigratetypeFree> {
    text.lines()
        .skip_while(|line| !line.starts_with(FREE_PAGES_SECTION))
        .skip(1)
        .take_while(|line| line.starts_with("Node"))
        .filter_map(|line| {
            let mut parts = line.splitn(3, ',');
            let node = parse_node(parts.next()?)?;
            let zone = parts.next()?.trim().strip_prefix("zone")?.trim().to_string();
            let mut words = parts.next()?.trim().strip_prefix("type")?.split_whitespace();
            let migratetype = words.next()?.to_string();
            let counts = parse_counts(words)?;
            Some((node, zone, migratetype, counts))
        })
        .collect()
}

/// Free blocks now, for a report: buddyinfo, plus per migrate type when
/// pagetypeinfo is readable.
pub fn snapshot(at_s: f64, reason: &str) -> ZoneSnapshot {
    let buddyinfo = fs::read_to_string(BUDDYINFO).unwrap_or_default();
    let pagetypeinfo = fs::read_to_string(PAGETYPEINFO).ok();
    snapshot_from(at_s, reason, &buddyinfo, pagetypeinfo.as_deref())
}

pub fn snapshot_from(at_s: f64, reason: &str, buddyinfo: &str, pagetypeinfo: Option<&str>) -> ZoneSnapshot {
    let mut zones = parse_buddyinfo(buddyinfo);
    for (node, zone, migratetype, counts) in pagetypeinfo.map(parse_pagetypeinfo).unwrap_or_default() {
        if let Some(z) = zones.iter_mut().find(|z| z.node == node && z.zone == zone) {
            z.by_migratetype.push((migratetype, counts));
        }
    }
    ZoneSnapshot { at_s, reason: reason.to_string(), zones }
}

/// `Node 0` or `Node    0`.
fn parse_node(text: &str) -> Option<u32> {
    text.trim().strip_prefix("Node")?.trim().parse().ok()
}

/// Counts per order; pagetypeinfo prints `>100000` when it stopped
/// counting, kept as the lower bound.
fn parse_counts<'a>(words: impl Iterator<Item = &'a str>) -> Option<Vec<u64>> {
    let counts: Option<Vec<u64>> = words.map(|w| w.trim_start_matches('>').parse().ok()).collect();
    counts.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDDYINFO_HERE: &str = include_str!("testdata/buddyinfo");
    const PAGETYPEINFO_HERE: &str = include_str!("testdata/pagetypeinfo");

    const TWO_NODES_BUDDYINFO: &str = "\
Node 0, zone      DMA      1      1      0      0      2      1      1      0      1      1      3 
Node 0, zone    DMA32      7      5      4      0      0      0      0      0      0      0      0 
Node 0, zone   Normal  12000    300      0      0      0      0      0      0      0      0      0 
Node 1, zone   Normal   8000   4000   2000      9      1      0      0      0      0      0      0 
";

    const TWO_NODES_PAGETYPEINFO: &str = "\
Page block order: 9
Pages per block:  512

Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 
Node    0, zone   Normal, type    Unmovable >100000    300      0      0      0      0      0      0      0      0      0 
Node    0, zone   Normal, type      Movable      0      0      0      0      0      0      0      0      0      0      0 
Node    1, zone   Normal, type    Unmovable   8000   4000   2000      9      1      0      0      0      0      0      0 
Node    1, zone   Normal, type          CMA      0      0      0      0      0      0      0      0      0      0      0 

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate 
Node 0, zone   Normal           50         2045           81            0            0 
Node 1, zone   Normal           60         2000           80            0            0 
";

    #[test]
    fn parses_this_machines_buddyinfo() {
        let zones = parse_buddyinfo(BUDDYINFO_HERE);
        let names: Vec<&str> = zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(names, ["DMA", "DMA32", "Normal"]);
        assert!(zones.iter().all(|z| z.node == 0 && z.free_blocks.len() == 11));
        assert_eq!(zones[2].free_blocks[..3], [18889, 12376, 3734]);
        assert_eq!(zones[1].free_blocks[10], 752);
    }

    #[test]
    fn parses_only_the_free_pages_section_of_pagetypeinfo() {
        let rows = parse_pagetypeinfo(PAGETYPEINFO_HERE);
        assert_eq!(rows.len(), 15, "3 zones x 5 types; the block counts section is not free pages");
        let (node, zone, migratetype, counts) = &rows[10];
        assert_eq!((*node, zone.as_str(), migratetype.as_str()), (0, "Normal", "Unmovable"));
        assert_eq!(counts[..3], [445, 413, 174]);
        assert!(rows.iter().all(|r| r.3.len() == 11));
    }

    #[test]
    fn snapshot_attaches_migrate_types_to_their_zone() {
        let snapshot = snapshot_from(1.5, "first order-3 failure", BUDDYINFO_HERE, Some(PAGETYPEINFO_HERE));
        assert_eq!((snapshot.at_s, snapshot.reason.as_str()), (1.5, "first order-3 failure"));
        let normal = &snapshot.zones[2];
        let types: Vec<&str> = normal.by_migratetype.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate"]);
        assert_eq!(normal.by_migratetype[1].1[..2], [17527, 11561]);
        assert_eq!(snapshot.zones[1].by_migratetype[1].1[10], 752, "DMA32's Movable blocks");
    }

    #[test]
    fn keeps_nodes_apart() {
        let snapshot = snapshot_from(0.0, "test", TWO_NODES_BUDDYINFO, Some(TWO_NODES_PAGETYPEINFO));
        assert_eq!(snapshot.zones.len(), 4);
        let node1 = &snapshot.zones[3];
        assert_eq!((node1.node, node1.zone.as_str()), (1, "Normal"));
        assert_eq!(node1.free_blocks[..4], [8000, 4000, 2000, 9]);
        let types: Vec<&str> = node1.by_migratetype.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["Unmovable", "CMA"]);
        let node0 = &snapshot.zones[2];
        assert_eq!(
            node0.by_migratetype[0],
            ("Unmovable".to_string(), vec![100000, 300, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        assert!(snapshot.zones[0].by_migratetype.is_empty(), "no DMA rows in this pagetypeinfo");
    }

    #[test]
    fn without_pagetypeinfo_there_are_no_migrate_types() {
        let snapshot = snapshot_from(0.0, "test", TWO_NODES_BUDDYINFO, None);
        assert_eq!(snapshot.zones.len(), 4);
        assert!(snapshot.zones.iter().all(|z| z.by_migratetype.is_empty()));
    }

    #[test]
    fn garbage_gives_nothing() {
        for text in [
            "",
            "\n\n",
            "hello world",
            "Node x, zone Normal 1 2",
            "Node 0, zone",
            "Node 0, zone Normal 1 two 3",
        ] {
            assert!(parse_buddyinfo(text).is_empty(), "{text:?}");
            assert!(parse_pagetypeinfo(text).is_empty(), "{text:?}");
        }
        let truncated = format!("{FREE_PAGES_SECTION} 0 1\nNode 0, zone Normal\nNode 0, zone Normal, type\n");
        assert!(parse_pagetypeinfo(&truncated).is_empty());
        assert!(snapshot_from(0.0, "test", "garbage", Some("garbage")).zones.is_empty());
    }

    #[test]
    fn snapshots_this_machine() {
        let snapshot = snapshot(0.0, "test");
        assert!(snapshot.zones.iter().any(|z| z.zone == "Normal"), "{snapshot:?}");
        assert!(snapshot.zones.iter().all(|z| !z.free_blocks.is_empty()));
    }
}
