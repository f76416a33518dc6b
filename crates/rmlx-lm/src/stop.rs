//! Stop strings over streamed text: text that may be the start of a stop string is held back
//! until it is known not to be one, and generation stops at the first complete stop string
//! (which is not returned).

/// The stop strings of one generation and the text held back for them.
#[derive(Clone, Debug, Default)]
pub struct StopText {
    stop: Vec<String>,
    held: String,
}

impl StopText {
    /// Empty stop strings are ignored.
    pub fn new(stop: &[String]) -> StopText {
        StopText {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text safe to hand out, and `Some(text before it)` when a stop
    /// string was completed (then nothing is held any more).
    pub fn push(&mut self, piece: &str) -> (String, Option<String>) {
        self.held.push_str(piece);
        if let Some((pos, _)) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|p| (p, s)))
            .min()
        {
            let before = self.held[..pos].to_string();
            self.held.clear();
            return (String::new(), Some(before));
        }
        let keep = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k))
                    .map(move |k| &s[..k])
            })
            .filter(|p| self.held.ends_with(p))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, None)
    }

    /// Everything still held (at the end of generation).
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_possible_stop_prefix_and_cuts_at_the_stop() {
        let mut s = StopText::new(&["END".to_string()]);
        assert_eq!(s.push("abc E"), ("abc ".to_string(), None));
        assert_eq!(s.push("N"), (String::new(), None));
        assert_eq!(s.push("Dx"), (String::new(), Some(String::new())));
        let mut s = StopText::new(&["\n\n".to_string()]);
        assert_eq!(s.push("a\n"), ("a".to_string(), None));
        assert_eq!(s.push("b"), ("\nb".to_string(), None));
        assert_eq!(s.take(), "");
    }
}
