//! The text both pictures are made of: HTML escaping, the page shell with its one inline style
//! sheet, and number formats. Nothing here knows a history or a benchmark.

/// `text` with the characters HTML gives meaning to escaped: safe as element content and as a
/// quoted attribute value. Everything a page shows that came from outside (a history's error
/// texts and digests, a file name, a command line) goes through here.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A whole self-contained page: `title` (escaped here) and `body`, HTML whose every piece of
/// outside text its maker escaped. The style sheet is inline; the page loads nothing.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape(title)
    )
}

/// The one style sheet of both pages: results by colour (ok green, failed grey, unknown amber),
/// blamed operations red, banners for passed and failed.
const STYLE: &str = "
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 20px 28px; color: #1d2433; background: #fff; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 22px 0 8px; }
code, .mono { font-family: ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; font-size: 13px; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 8px 0 14px; font-weight: 600; }
.banner.passed { background: #e3f6e8; border: 1px solid #3f9b57; color: #1e5f31; }
.banner.failed { background: #fde8e8; border: 1px solid #c93636; color: #8a1c1c; }
.banner .message { display: block; font-weight: 400; margin-top: 4px; }
.note { color: #5b6478; margin: 6px 0; }
.legend span { display: inline-block; margin-right: 16px; }
.swatch { display: inline-block; width: 14px; height: 10px; margin-right: 5px; vertical-align: middle; border-radius: 2px; }
.scroll { overflow-x: auto; border: 1px solid #dde1ea; border-radius: 6px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 3px 12px 3px 0; vertical-align: top; }
th { color: #5b6478; font-weight: 600; }
td.num, th.num { text-align: right; padding-left: 12px; }
tr.blamed td { color: #b3261e; font-weight: 600; }
ul.blamed li, ul.blamed a { color: #b3261e; }
svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #1d2433; }
svg .axis line, svg .axis path { stroke: #8a93a6; }
svg .grid, svg .axis line.grid { stroke: #e6e9f0; }
svg .lane { fill: #f6f7fa; }
svg .op rect { stroke: #ffffff; stroke-width: 0.5; }
svg .op.ok rect { fill: #4caf6a; }
svg .op.fail rect { fill: #9aa1ad; }
svg .op.info rect, svg .op.open rect { fill: #f2b134; }
svg .op .doubt { stroke: #f2b134; stroke-width: 2; stroke-dasharray: 4 3; }
svg .op text { font-size: 10px; fill: #ffffff; pointer-events: none; }
svg .op.info text, svg .op.open text { fill: #3d2c00; }
svg.dimmed .op { opacity: 0.35; }
svg.dimmed .op.blamed { opacity: 1; }
svg .op.blamed rect { stroke: #d3261e; stroke-width: 3; }
svg .op:hover rect { stroke: #1d2433; stroke-width: 2; }
svg .series { fill: none; stroke-width: 2; }
svg .area { stroke: none; opacity: 0.15; }
";

/// `us` microseconds for people: `850 µs`, `1.50 ms`, `2.35 s`.
pub fn duration_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// A count for people, with thin separators between thousands: `1 234 567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x' & \"y\")</script>"),
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
        let shell = page("<b>", "<p>body</p>");
        assert!(shell.contains("<title>&lt;b&gt;</title>"));
        assert!(!shell.contains("<script"), "a page needs no script");
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(duration_us(850.0), "850 µs");
        assert_eq!(duration_us(1_500.0), "1.50 ms");
        assert_eq!(duration_us(2_350_000.0), "2.35 s");
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(count(999), "999");
    }
}
