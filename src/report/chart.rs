//! An XY chart in inline SVG, for the bench page: a [`Frame`] maps a data range to a plot
//! area, draws both axes with their ticks, grid lines and labels, and series as polylines with
//! one point (a circle with a hover title) per value. [`ticks`] picks round tick values.

use std::fmt::Write;

use super::html::escape;

/// Round values (1, 2 or 5 times a power of ten) covering `min..=max`, about `count` of them.
pub fn ticks(min: f64, max: f64, count: usize) -> Vec<f64> {
    let span = max - min;
    if !(span.is_finite() && span > 0.0) || count == 0 {
        return vec![min];
    }
    let rough = span / count as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| span / step <= count as f64)
        .unwrap_or(10.0 * power);
    let first = (min / step).ceil() as i64;
    let last = (max / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A plot area: `x` and `y` data ranges drawn into a `width` x `height` picture with margins
/// for the axes.
pub struct Frame {
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

const MARGIN_LEFT: f64 = 84.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 48.0;

impl Frame {
    /// A frame for `x` and `y` (each `(low, high)`; an empty range is widened by one).
    pub fn new(width: f64, height: f64, x: (f64, f64), y: (f64, f64)) -> Frame {
        let widen = |(low, high): (f64, f64)| {
            if high > low {
                (low, high)
            } else {
                (low, low + 1.0)
            }
        };
        Frame {
            width,
            height,
            x: widen(x),
            y: widen(y),
        }
    }

    /// The picture's x pixel of data value `x`.
    pub fn px(&self, x: f64) -> f64 {
        let plot = self.width - MARGIN_LEFT - MARGIN_RIGHT;
        MARGIN_LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * plot
    }

    /// The picture's y pixel of data value `y` (up is more).
    pub fn py(&self, y: f64) -> f64 {
        let plot = self.height - MARGIN_TOP - MARGIN_BOTTOM;
        self.height - MARGIN_BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * plot
    }

    /// The opening `<svg>` tag (close it with `</svg>`), its class, and its title on top.
    pub fn open(&self, class: &str, title: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {}\" width=\"{w}\" \
             height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\">\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\
             <text x=\"{MARGIN_LEFT}\" y=\"18\" style=\"font-size:13px;font-weight:600\">{t}</text>\n",
            escape(class),
            w = self.width,
            h = self.height,
            t = escape(title),
        )
    }

    /// The x axis along the bottom: a tick, a grid line and a label at each `(value, label)`,
    /// and `name` under them.
    pub fn x_axis(&self, ticks: &[(f64, String)], name: &str) -> String {
        let (top, bottom) = (MARGIN_TOP, self.height - MARGIN_BOTTOM);
        let mut svg = format!(
            "<g class=\"axis x\"><line x1=\"{MARGIN_LEFT}\" y1=\"{bottom}\" x2=\"{:.1}\" y2=\"{bottom}\"/>",
            self.width - MARGIN_RIGHT
        );
        for (value, label) in ticks {
            let x = self.px(*value);
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\"/>\
                 <line x1=\"{x:.1}\" y1=\"{bottom}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                bottom + 5.0,
                bottom + 18.0,
                escape(label)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
            (MARGIN_LEFT + self.width - MARGIN_RIGHT) / 2.0,
            self.height - 8.0,
            escape(name)
        );
        svg
    }

    /// The y axis on the left, like [`Frame::x_axis`].
    pub fn y_axis(&self, ticks: &[(f64, String)], name: &str) -> String {
        let (right, bottom) = (self.width - MARGIN_RIGHT, self.height - MARGIN_BOTTOM);
        let mut svg = format!(
            "<g class=\"axis y\"><line x1=\"{MARGIN_LEFT}\" y1=\"{MARGIN_TOP}\" x2=\"{MARGIN_LEFT}\" y2=\"{bottom}\"/>"
        );
        for (value, label) in ticks {
            let y = self.py(*value);
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{MARGIN_LEFT}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\"/>\
                 <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{MARGIN_LEFT}\" y2=\"{y:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                MARGIN_LEFT - 5.0,
                MARGIN_LEFT - 8.0,
                y + 4.0,
                escape(label)
            );
        }
        let _ = writeln!(
            svg,
            "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text></g>",
            (MARGIN_TOP + bottom) / 2.0,
            escape(name)
        );
        svg
    }

    /// A series: a polyline through `points` in `colour`, the area under it when `area`, and a
    /// circle per point whose hover title is `title(index)`.
    pub fn series(
        &self,
        name: &str,
        colour: &str,
        points: &[(f64, f64)],
        area: bool,
        title: impl Fn(usize) -> String,
    ) -> String {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        let mut svg = format!(
            "<g class=\"series-group\" data-series=\"{}\">",
            escape(name)
        );
        if let (true, Some(first), Some(last)) = (area, points.first(), points.last()) {
            let base = self.py(self.y.0);
            let _ = write!(
                svg,
                "<polygon class=\"area\" fill=\"{colour}\" points=\"{:.1},{base:.1} {} {:.1},{base:.1}\"/>",
                self.px(first.0),
                path.join(" "),
                self.px(last.0)
            );
        }
        let _ = write!(
            svg,
            "<polyline class=\"series\" stroke=\"{colour}\" points=\"{}\"/>",
            path.join(" ")
        );
        for (index, (x, y)) in points.iter().enumerate() {
            let _ = write!(
                svg,
                "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{}</title></circle>",
                self.px(*x),
                self.py(*y),
                escape(&title(index))
            );
        }
        svg.push_str("</g>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 1234.0, 4), [0.0, 500.0, 1000.0]);
        assert_eq!(ticks(3.0, 3.0, 5), [3.0]);
        assert_eq!(ticks(0.0, f64::NAN, 5), [0.0]);
    }

    #[test]
    fn a_frame_maps_data_to_its_plot_area() {
        let frame = Frame::new(400.0, 300.0, (0.0, 10.0), (0.0, 100.0));
        assert_eq!(frame.px(0.0), MARGIN_LEFT);
        assert_eq!(frame.px(10.0), 400.0 - MARGIN_RIGHT);
        assert_eq!(frame.py(0.0), 300.0 - MARGIN_BOTTOM);
        assert_eq!(frame.py(100.0), MARGIN_TOP);
        let svg = frame.series("s<1>", "#000", &[(1.0, 2.0), (3.0, 4.0)], true, |i| {
            format!("point {i}")
        });
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("data-series=\"s&lt;1&gt;\""));
    }
}
