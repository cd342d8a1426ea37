//! gfp flags and migrate types, named exactly as the kernel prints them.
//!
//! The flag table comes from the running kernel's own `mm_page_alloc`
//! format file, whose `print fmt` holds every `{mask, "NAME"}` pair the
//! kernel's `show_gfp_flags()` uses, so names and bit positions follow the
//! kernel instead of a copy that goes stale between releases.

use std::fs;

use anyhow::{Context as _, Result, bail};

use super::{btf::KernelBtf, tracefs::Tracefs};

/// Where the table starts in the format file's `print fmt` line.
const PRINT_FLAGS_CALL: &str = "__print_flags(REC->gfp_flags,";
const DIRECT_RECLAIM: &str = "__GFP_DIRECT_RECLAIM";

/// The kernel's gfp flag names in the order it tries them: composite names
/// (`GFP_KERNEL`) before the single bits they are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GfpTable {
    entries: Vec<(u64, String)>,
}

impl GfpTable {
    /// Parses the table out of an `mm_page_alloc` format file.
    pub fn from_format(format_text: &str) -> Result<Self> {
        let start = format_text
            .find(PRINT_FLAGS_CALL)
            .context("no `__print_flags(REC->gfp_flags, ...)` in the format's print fmt")?;
        let tokens = lex(&format_text[start + PRINT_FLAGS_CALL.len()..])?;
        let entries = Parser { tokens: &tokens, pos: 0 }.flag_table()?;
        if entries.is_empty() {
            bail!("the gfp flag table is empty");
        }
        if !entries.iter().any(|(_, name)| name == DIRECT_RECLAIM) {
            bail!("the gfp flag table has no {DIRECT_RECLAIM} entry");
        }
        Ok(Self { entries })
    }

    /// The running kernel's table, from `kmem/mm_page_alloc/format`.
    pub fn from_tracefs(tracefs: &Tracefs) -> Result<Self> {
        let path = tracefs.root().join("events/kmem/mm_page_alloc/format");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_format(&text).with_context(|| format!("parsing the gfp flag table in {}", path.display()))
    }

    /// The table of a 6.18 kernel, for when the format file cannot be read or
    /// parsed. Bits above `__GFP_ACCOUNT` differ between 6.x releases; the
    /// common flags have not moved since 4.x.
    pub fn builtin() -> Self {
        const DMA: u64 = 1 << 0;
        const HIGHMEM: u64 = 1 << 1;
        const DMA32: u64 = 1 << 2;
        const MOVABLE: u64 = 1 << 3;
        const RECLAIMABLE: u64 = 1 << 4;
        const HIGH: u64 = 1 << 5;
        const IO: u64 = 1 << 6;
        const FS: u64 = 1 << 7;
        const ZERO: u64 = 1 << 8;
        const DIRECT_RECLAIM_BIT: u64 = 1 << 10;
        const KSWAPD_RECLAIM: u64 = 1 << 11;
        const WRITE: u64 = 1 << 12;
        const NOWARN: u64 = 1 << 13;
        const RETRY_MAYFAIL: u64 = 1 << 14;
        const NOFAIL: u64 = 1 << 15;
        const NORETRY: u64 = 1 << 16;
        const MEMALLOC: u64 = 1 << 17;
        const COMP: u64 = 1 << 18;
        const NOMEMALLOC: u64 = 1 << 19;
        const HARDWALL: u64 = 1 << 20;
        const THISNODE: u64 = 1 << 21;
        const ACCOUNT: u64 = 1 << 22;
        const ZEROTAGS: u64 = 1 << 23;
        const NO_OBJ_EXT: u64 = 1 << 24;

        const RECLAIM: u64 = DIRECT_RECLAIM_BIT | KSWAPD_RECLAIM;
        const KERNEL: u64 = RECLAIM | IO | FS;
        const USER: u64 = KERNEL | HARDWALL;
        const HIGHUSER: u64 = USER | HIGHMEM;
        const HIGHUSER_MOVABLE: u64 = HIGHUSER | MOVABLE;
        const TRANSHUGE_LIGHT: u64 = (HIGHUSER_MOVABLE | COMP | NOMEMALLOC | NOWARN) & !RECLAIM;

        let entries: [(u64, &str); 38] = [
            (TRANSHUGE_LIGHT | DIRECT_RECLAIM_BIT, "GFP_TRANSHUGE"),
            (TRANSHUGE_LIGHT, "GFP_TRANSHUGE_LIGHT"),
            (HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
            (HIGHUSER, "GFP_HIGHUSER"),
            (USER, "GFP_USER"),
            (KERNEL | ACCOUNT, "GFP_KERNEL_ACCOUNT"),
            (KERNEL, "GFP_KERNEL"),
            (RECLAIM | IO, "GFP_NOFS"),
            (HIGH | KSWAPD_RECLAIM, "GFP_ATOMIC"),
            (RECLAIM, "GFP_NOIO"),
            (KSWAPD_RECLAIM | NOWARN, "GFP_NOWAIT"),
            (DMA, "GFP_DMA"),
            (DMA32, "GFP_DMA32"),
            (RECLAIM, "__GFP_RECLAIM"),
            (DMA, "__GFP_DMA"),
            (HIGHMEM, "__GFP_HIGHMEM"),
            (DMA32, "__GFP_DMA32"),
            (MOVABLE, "__GFP_MOVABLE"),
            (RECLAIMABLE, "__GFP_RECLAIMABLE"),
            (HIGH, "__GFP_HIGH"),
            (IO, "__GFP_IO"),
            (FS, "__GFP_FS"),
            (ZERO, "__GFP_ZERO"),
            (DIRECT_RECLAIM_BIT, "__GFP_DIRECT_RECLAIM"),
            (KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
            (WRITE, "__GFP_WRITE"),
            (NOWARN, "__GFP_NOWARN"),
            (RETRY_MAYFAIL, "__GFP_RETRY_MAYFAIL"),
            (NOFAIL, "__GFP_NOFAIL"),
            (NORETRY, "__GFP_NORETRY"),
            (MEMALLOC, "__GFP_MEMALLOC"),
            (COMP, "__GFP_COMP"),
            (NOMEMALLOC, "__GFP_NOMEMALLOC"),
            (HARDWALL, "__GFP_HARDWALL"),
            (THISNODE, "__GFP_THISNODE"),
            (ACCOUNT, "__GFP_ACCOUNT"),
            (ZEROTAGS, "__GFP_ZEROTAGS"),
            (NO_OBJ_EXT, "__GFP_NO_OBJ_EXT"),
        ];
        Self { entries: entries.iter().map(|&(mask, name)| (mask, name.to_string())).collect() }
    }

    /// `(mask, name)` in the kernel's order.
    pub fn entries(&self) -> &[(u64, String)] {
        &self.entries
    }

    /// Flags as `trace_print_flags_seq` prints them: each name whose bits
    /// are all still set, in table order, clearing its bits; leftover bits
    /// in hex. The kernel prints `none` for 0.
    pub fn decode(&self, flags: u64) -> String {
        if flags == 0 {
            return "none".to_string();
        }
        let mut remaining = flags;
        let mut parts = Vec::new();
        for (mask, name) in &self.entries {
            if remaining == 0 {
                break;
            }
            if *mask != 0 && remaining & mask == *mask {
                parts.push(name.clone());
                remaining &= !mask;
            }
        }
        if remaining != 0 {
            parts.push(format!("{remaining:#x}"));
        }
        parts.join("|")
    }

    /// The inverse of [`decode`](Self::decode): `GFP_USER|__GFP_ZERO|0x200`
    /// to its value; `None` for an unknown name.
    pub fn encode(&self, text: &str) -> Option<u64> {
        if text == "none" {
            return Some(0);
        }
        text.split('|').map(str::trim).try_fold(0, |value, part| {
            let bits = match part.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => self.mask_of(part)?,
            };
            Some(value | bits)
        })
    }

    /// Whether the allocation was allowed to reclaim memory itself (and so
    /// was not expected to fail under pressure the way atomic ones are).
    pub fn can_reclaim(&self, flags: u64) -> bool {
        self.mask_of(DIRECT_RECLAIM).is_some_and(|mask| flags & mask != 0)
    }

    pub fn mask_of(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|(_, n)| n == name).map(|(mask, _)| *mask)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Number(u64),
    Ident(String),
    Str(String),
    Punct(&'static str),
    Other(char),
}

/// Tokens of the C constant expressions in a `print fmt` line.
fn lex(text: &str) -> Result<Vec<Token>> {
    const PUNCTS: [&str; 15] = ["<<", ">>", "->", "(", ")", "{", "}", ",", "|", "&", "^", "~", "+", "-", "*"];
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &text[i..];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
            let literal = rest[..len].trim_end_matches(['u', 'U', 'l', 'L']);
            let value = match literal.strip_prefix("0x").or_else(|| literal.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => literal.parse(),
            }
            .with_context(|| format!("bad number `{}`", &rest[..len]))?;
            tokens.push(Token::Number(value));
            i += len;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..len].to_string()));
            i += len;
        } else if c == b'"' {
            let len = rest[1..].find('"').context("unterminated string")?;
            tokens.push(Token::Str(rest[1..1 + len].to_string()));
            i += len + 2;
        } else if let Some(punct) = PUNCTS.iter().find(|p| rest.starts_with(*p)) {
            tokens.push(Token::Punct(punct));
            i += punct.len();
        } else {
            // Past the table (`? ... : "none"`); the parser stops before it.
            let other = rest.chars().next().unwrap_or_default();
            tokens.push(Token::Other(other));
            i += other.len_utf8();
        }
    }
    Ok(tokens)
}

/// Recursive descent over `"|", {expr, "NAME"}, ..., {0, NULL})` with C's
/// precedence for the operators the kernel's flag macros expand to.
struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_punct(&self, punct: &str) -> bool {
        matches!(self.peek(), Some(Token::Punct(p)) if *p == punct)
    }

    fn next(&mut self) -> Option<&Token> {
        self.pos += 1;
        self.tokens.get(self.pos - 1)
    }

    fn expect(&mut self, punct: &str) -> Result<()> {
        match self.next() {
            Some(Token::Punct(p)) if *p == punct => Ok(()),
            other => bail!("expected `{punct}`, found {other:?}"),
        }
    }

    /// The delimiter, then entries until the `{ 0, NULL }` terminator.
    fn flag_table(mut self) -> Result<Vec<(u64, String)>> {
        match self.next() {
            Some(Token::Str(_)) => {}
            other => bail!("expected the delimiter string, found {other:?}"),
        }
        let mut entries = Vec::new();
        while self.peek_punct(",") {
            self.expect(",")?;
            self.expect("{")?;
            let mask = self.or()?;
            self.expect(",")?;
            let Some(Token::Str(name)) = self.peek().cloned() else {
                // `{ 0, ((void *)0) }`: the end of the table.
                break;
            };
            self.pos += 1;
            self.expect("}")?;
            entries.push((mask, name));
        }
        Ok(entries)
    }

    fn or(&mut self) -> Result<u64> {
        let mut value = self.xor()?;
        while self.peek_punct("|") {
            self.pos += 1;
            value |= self.xor()?;
        }
        Ok(value)
    }

    fn xor(&mut self) -> Result<u64> {
        let mut value = self.and()?;
        while self.peek_punct("^") {
            self.pos += 1;
            value ^= self.and()?;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<u64> {
        let mut value = self.shift()?;
        while self.peek_punct("&") {
            self.pos += 1;
            value &= self.shift()?;
        }
        Ok(value)
    }

    fn shift(&mut self) -> Result<u64> {
        let mut value = self.additive()?;
        loop {
            let left = self.peek_punct("<<");
            if !left && !self.peek_punct(">>") {
                return Ok(value);
            }
            self.pos += 1;
            let amount = self.additive()?;
            let amount = u32::try_from(amount).ok().filter(|a| *a < 64).context("shift out of range")?;
            value = if left { value << amount } else { value >> amount };
        }
    }

    fn additive(&mut self) -> Result<u64> {
        let mut value = self.unary()?;
        loop {
            let plus = self.peek_punct("+");
            if !plus && !self.peek_punct("-") {
                return Ok(value);
            }
            self.pos += 1;
            let rhs = self.unary()?;
            value = if plus { value.wrapping_add(rhs) } else { value.wrapping_sub(rhs) };
        }
    }

    fn unary(&mut self) -> Result<u64> {
        match self.next().cloned() {
            Some(Token::Number(n)) => Ok(n),
            Some(Token::Punct("~")) => Ok(!self.unary()?),
            Some(Token::Punct("-")) => Ok(self.unary()?.wrapping_neg()),
            Some(Token::Punct("(")) => {
                if let Some(width_mask) = self.cast()? {
                    return Ok(self.unary()? & width_mask);
                }
                let value = self.or()?;
                self.expect(")")?;
                Ok(value)
            }
            other => bail!("expected a number, `~`, `-` or `(`, found {other:?}"),
        }
    }

    /// After `(`: a cast like `( gfp_t)` or `( unsigned long)` is consumed
    /// and gives the mask of its width; an expression in parentheses is
    /// left alone.
    fn cast(&mut self) -> Result<Option<u64>> {
        let start = self.pos;
        let mut words = Vec::new();
        while let Some(Token::Ident(word)) = self.peek() {
            words.push(word.clone());
            self.pos += 1;
        }
        if words.is_empty() {
            return Ok(None);
        }
        if !self.peek_punct(")") {
            self.pos = start;
            bail!("unexpected identifier `{}` in a flag expression", words[0]);
        }
        self.pos += 1;
        let wide = words.iter().any(|w| w == "long" || w.ends_with("64"));
        Ok(Some(if wide { u64::MAX } else { u64::from(u32::MAX) }))
    }
}

/// Migrate type names indexed by value, from BTF `enum migratetype`,
/// spelled as /proc/pagetypeinfo spells them. Falls back to the four types
/// every 6.x kernel has.
pub fn migratetype_names(btf: &KernelBtf) -> Vec<String> {
    match btf.enum_members("migratetype") {
        Ok(members) => migratetype_names_from(&members),
        Err(_) => ["Unmovable", "Movable", "Reclaimable", "HighAtomic"].map(String::from).to_vec(),
    }
}

/// Names indexed by value from `(MIGRATE_*, value)` pairs. The aliases
/// `MIGRATE_PCPTYPES` (= HIGHATOMIC) and the count `MIGRATE_TYPES` are not
/// types.
pub fn migratetype_names_from(members: &[(String, i64)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (enumerator, value) in members {
        let Some(kind) = enumerator.strip_prefix("MIGRATE_") else { continue };
        if kind == "PCPTYPES" || kind == "TYPES" {
            continue;
        }
        let Ok(index) = usize::try_from(*value) else { continue };
        if index >= names.len() {
            names.resize(index + 1, String::new());
        }
        names[index] = pagetypeinfo_spelling(kind);
    }
    for (index, name) in names.iter_mut().enumerate() {
        if name.is_empty() {
            *name = index.to_string();
        }
    }
    names
}

/// `HIGHATOMIC` -> `HighAtomic`, as the kernel's `migratetype_names[]`.
fn pagetypeinfo_spelling(kind: &str) -> String {
    match kind {
        "HIGHATOMIC" => "HighAtomic".to_string(),
        "CMA" => "CMA".to_string(),
        _ => {
            let lower = kind.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
    }
}

/// The name of migrate type `value`, or the number when unknown.
pub fn migratetype_name(names: &[String], value: i32) -> String {
    usize::try_from(value).ok().and_then(|i| names.get(i)).cloned().unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = include_str!("testdata/mm_page_alloc.format");

    fn parsed() -> GfpTable {
        GfpTable::from_format(FORMAT).expect("the saved 6.18 format parses")
    }

    #[test]
    fn parses_every_entry_of_the_real_format() {
        let table = parsed();
        assert_eq!(table.entries().len(), 38);
        assert_eq!(table.entries()[0].0, 0x1c24ca, "GFP_TRANSHUGE is computed through `& ~` and casts");
        assert_eq!(table.entries()[0].1, "GFP_TRANSHUGE");
        assert_eq!(table.mask_of("GFP_KERNEL"), Some(0xcc0));
        assert_eq!(table.mask_of("GFP_ATOMIC"), Some(0x820));
        assert_eq!(table.mask_of("GFP_NOWAIT"), Some(0x2800));
        assert_eq!(table.mask_of("GFP_TRANSHUGE_LIGHT"), Some(0x1c20ca));
        assert_eq!(table.mask_of("__GFP_DIRECT_RECLAIM"), Some(0x400));
        assert_eq!(table.mask_of("__GFP_NO_OBJ_EXT"), Some(1 << 24));
        assert_eq!(table.mask_of("__GFP_NOSUCH"), None);
    }

    #[test]
    fn the_failing_bpf_map_allocation_round_trips() {
        let table = parsed();
        let text = "GFP_USER|__GFP_ZERO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_ACCOUNT";
        let value = table.encode(text).unwrap();
        assert_eq!(value, 0x552dc0);
        assert_eq!(table.decode(value), text);
        assert!(table.can_reclaim(value));
    }

    #[test]
    fn decodes_common_modes_to_the_kernel_names() {
        let table = parsed();
        assert_eq!(table.decode(0xcc0), "GFP_KERNEL");
        assert_eq!(table.decode(0x400cc0), "GFP_KERNEL_ACCOUNT");
        assert_eq!(table.decode(0x820), "GFP_ATOMIC");
        assert_eq!(table.decode(0x2820), "GFP_ATOMIC|__GFP_NOWARN");
        assert_eq!(table.decode(0x2800), "GFP_NOWAIT");
        assert_eq!(table.decode(0x140cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
        assert_eq!(table.decode(0), "none");
    }

    #[test]
    fn only_direct_reclaim_counts_as_can_reclaim() {
        let table = parsed();
        assert!(table.can_reclaim(0xcc0), "GFP_KERNEL");
        assert!(!table.can_reclaim(0x820), "GFP_ATOMIC");
        assert!(!table.can_reclaim(0x2800), "GFP_NOWAIT");
        assert!(!table.can_reclaim(0x800), "kswapd reclaim alone is not direct reclaim");
    }

    #[test]
    fn unknown_bits_are_printed_in_hex() {
        let table = parsed();
        assert_eq!(table.decode(0x200), "0x200");
        assert_eq!(table.decode(0xcc0 | 1 << 30), "GFP_KERNEL|0x40000000");
        assert_eq!(table.encode("GFP_KERNEL|0x40000000"), Some(0xcc0 | 1 << 30));
        assert_eq!(table.encode("GFP_KERNEL|__GFP_BOGUS"), None);
    }

    #[test]
    fn builtin_table_matches_the_parsed_one() {
        let (builtin, table) = (GfpTable::builtin(), parsed());
        assert_eq!(builtin.entries(), table.entries());
        for flags in [0, 0xcc0, 0x820, 0x2800, 0x552dc0, 0x1c24ca, 0x200, u64::MAX, 0x1fff_ffff] {
            assert_eq!(builtin.decode(flags), table.decode(flags), "flags {flags:#x}");
        }
    }

    #[test]
    fn evaluates_the_c_forms_older_kernels_print() {
        let format = r#"print fmt: "gfp_flags=%s", (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {(unsigned long)((( gfp_t)0x400u)|(( gfp_t)0x800u)), "__GFP_RECLAIM"}, {(unsigned long)(( gfp_t)0x400u), "__GFP_DIRECT_RECLAIM"}, {(unsigned long)(~(( gfp_t)0x1u) & 0x3), "TWO"}, {(unsigned long)(( gfp_t)~0x1u), "NARROW"}, {(unsigned long)(1ULL << 33), "WIDE"}, { -1, ((void *)0) } ) : "none""#;
        let table = GfpTable::from_format(format).unwrap();
        assert_eq!(table.mask_of("__GFP_RECLAIM"), Some(0xc00));
        assert_eq!(table.mask_of("TWO"), Some(2));
        assert_eq!(table.mask_of("NARROW"), Some(0xffff_fffe), "a gfp_t cast keeps 32 bits");
        assert_eq!(table.mask_of("WIDE"), Some(1 << 33));
        assert_eq!(table.entries().len(), 5);
    }

    #[test]
    fn rejects_formats_without_a_usable_table() {
        assert!(GfpTable::from_format("name: mm_page_alloc\nprint fmt: \"%d\", REC->order").is_err());
        let no_direct =
            r#"__print_flags(REC->gfp_flags, "|", {(unsigned long)0x1, "__GFP_DMA"}, {0, ((void *)0)})"#;
        assert!(GfpTable::from_format(no_direct).is_err());
        let garbage = r#"__print_flags(REC->gfp_flags, "|", {(unsigned long)(1 <<< 2), "X"})"#;
        assert!(GfpTable::from_format(garbage).is_err());
        let undefined = r#"__print_flags(REC->gfp_flags, "|", {(unsigned long)(SOME_MACRO | 1), "X"})"#;
        assert!(GfpTable::from_format(undefined).is_err());
    }

    #[test]
    fn parses_the_live_format_file() {
        let (tracefs, _) =
            Tracefs::find_or_mount().expect("tracefs is mounted (or mountable) on this machine");
        let table = GfpTable::from_tracefs(&tracefs).expect("the live mm_page_alloc format parses");
        assert_eq!(table.mask_of("GFP_KERNEL"), Some(0xcc0));
        assert!(table.can_reclaim(0xcc0));
    }

    #[test]
    fn names_migrate_types_like_pagetypeinfo() {
        let members: Vec<(String, i64)> = [
            ("MIGRATE_UNMOVABLE", 0),
            ("MIGRATE_MOVABLE", 1),
            ("MIGRATE_RECLAIMABLE", 2),
            ("MIGRATE_PCPTYPES", 3),
            ("MIGRATE_HIGHATOMIC", 3),
            ("MIGRATE_CMA", 4),
            ("MIGRATE_ISOLATE", 5),
            ("MIGRATE_TYPES", 6),
        ]
        .map(|(n, v)| (n.to_string(), v))
        .to_vec();
        let names = migratetype_names_from(&members);
        assert_eq!(names, ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate"]);
        assert_eq!(migratetype_name(&names, 1), "Movable");
        assert_eq!(migratetype_name(&names, 9), "9");
        assert_eq!(migratetype_name(&names, -1), "-1");
    }

    #[test]
    fn names_migrate_types_from_this_kernels_btf() {
        let btf = KernelBtf::load().expect("kernel BTF is readable on this machine");
        let names = migratetype_names(&btf);
        assert_eq!(names[..4], ["Unmovable", "Movable", "Reclaimable", "HighAtomic"]);
        assert!(!names.iter().any(|n| n == "Pcptypes" || n == "Types"), "{names:?}");
    }
}
