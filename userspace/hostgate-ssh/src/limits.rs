//! Concurrent sessions per customer: a slot is taken when a login succeeds
//! and given back when the connection ends.

use std::collections::HashMap;

#[derive(Debug)]
pub struct SessionLimits {
    per_customer: usize,
    open: HashMap<String, usize>,
}

impl SessionLimits {
    pub fn new(per_customer: usize) -> Self {
        SessionLimits { per_customer, open: HashMap::new() }
    }

    /// Takes a slot for `customer`; false when all are in use.
    pub fn try_open(&mut self, customer: &str) -> bool {
        let n = self.open.entry(customer.to_string()).or_default();
        if *n >= self.per_customer {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives a slot back (a customer without open sessions is forgotten).
    pub fn close(&mut self, customer: &str) {
        if let Some(n) = self.open.get_mut(customer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(customer);
            }
        }
    }

    pub fn open(&self, customer: &str) -> usize {
        self.open.get(customer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn per_customer_and_released() {
        let mut l = SessionLimits::new(2);
        assert!(l.try_open("acme") && l.try_open("acme"));
        assert!(!l.try_open("acme"), "third refused");
        assert!(l.try_open("globex"), "others unaffected");
        l.close("acme");
        assert!(l.try_open("acme"), "a slot came back");
        l.close("nobody");
        assert_eq!(l.open("nobody"), 0);
    }

    proptest! {
        /// Whatever the order of opens and closes, the count stays within
        /// the limit and equals opens granted minus closes of open slots.
        #[test]
        fn never_over_the_limit(ops in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut l = SessionLimits::new(3);
            let mut model = 0usize;
            for open in ops {
                if open {
                    if l.try_open("c") { model += 1; }
                } else {
                    l.close("c");
                    model = model.saturating_sub(1);
                }
                prop_assert!(l.open("c") <= 3);
                prop_assert_eq!(l.open("c"), model);
            }
        }
    }
}
