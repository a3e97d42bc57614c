//! [`NameMap`]: a map from names to values for the few entries one cluster has (its members),
//! held as a vector in name order.
//!
//! Why: a `BTreeMap` node has room for 11 entries whatever it holds, so a cluster of three
//! members paid for eleven in every per-member map its cores keep (the repairer's, the simulated
//! platform's: ~2.8 KB a cluster for the simulated members alone, benches/fleet.rs). A lookup here
//! is a binary search over the entries themselves. What it is not: a map for many entries (an
//! insert or a removal shifts the ones after it).

use std::fmt;

/// Values by name, in name order. The methods are the `BTreeMap` ones the cores use.
#[derive(Clone, PartialEq)]
pub struct NameMap<V>(Vec<(String, V)>);

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap(Vec::new())
    }
}

impl<V: fmt::Debug> fmt::Debug for NameMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> NameMap<V> {
    pub fn new() -> Self {
        NameMap(Vec::new())
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// `name`'s value, made by `make` if there is none: one search, and the name copied only
    /// when it is new.
    pub fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (name.to_string(), make()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets `name`'s value; returns the one it replaced.
    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps the entries for which `keep` says so, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        self.0.retain_mut(|(n, v)| keep(n, v));
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&String, &mut V)> {
        self.0.iter_mut().map(|(n, v)| (&*n, v))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Whatever the operations, the map answers as a `BTreeMap` given the same ones: 20,000
    /// operations drawn from a fixed pseudo-random sequence over 12 names.
    #[test]
    fn behaves_as_a_btreemap() {
        let mut map = NameMap::new();
        let mut model = BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let r = next();
            let name = format!("pg-{}", r % 12);
            let v = (r >> 8) as u32;
            match (r >> 40) % 5 {
                0 => assert_eq!(map.insert(name.clone(), v), model.insert(name, v)),
                1 => assert_eq!(map.remove(&name), model.remove(&name)),
                2 => assert_eq!(
                    *map.get_or_insert_with(&name, || v),
                    *model.entry(name).or_insert(v)
                ),
                3 => {
                    let m = 1 + (v % 3);
                    map.retain(|_, x| *x % m == 0);
                    model.retain(|_, x| *x % m == 0);
                }
                _ => {
                    if let Some(x) = map.get_mut(&name) {
                        *x = x.wrapping_add(1);
                    }
                    if let Some(x) = model.get_mut(&name) {
                        *x = x.wrapping_add(1);
                    }
                }
            }
            assert!(map.iter().eq(model.iter()));
            assert_eq!(map.len(), model.len());
            for k in 0..12 {
                let name = format!("pg-{k}");
                assert_eq!(map.get(&name), model.get(&name));
                assert_eq!(map.contains_key(&name), model.contains_key(&name));
            }
        }
    }
}
