//! `bank bench`'s operation mix: [`Mix`], the percentages of deposits, withdrawals, transfers
//! and queries (parsed from `--mix deposit=40,withdraw=10,...`), and drawing a [`Kind`] from it.

use serde::Serialize;

use crate::load::random::Random;

/// Percentages of each operation; they add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub deposit: u32,
    pub withdraw: u32,
    pub transfer: u32,
    pub query: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            deposit: 25,
            withdraw: 25,
            transfer: 25,
            query: 25,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `deposit=40,withdraw=10,transfer=40,query=10`; operations left out get 0.
    fn from_str(text: &str) -> Result<Mix, String> {
        let mut mix = Mix {
            deposit: 0,
            withdraw: 0,
            transfer: 0,
            query: 0,
        };
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not OPERATION=PERCENT"))?;
            let value: u32 = value
                .trim()
                .parse()
                .map_err(|_| format!("{value:?} in {part:?} is not a whole percentage"))?;
            let slot = match name.trim() {
                "deposit" => &mut mix.deposit,
                "withdraw" => &mut mix.withdraw,
                "transfer" => &mut mix.transfer,
                "query" => &mut mix.query,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}: use deposit, withdraw, transfer, query"
                    ))
                }
            };
            *slot = value;
        }
        let total = u64::from(mix.deposit)
            + u64::from(mix.withdraw)
            + u64::from(mix.transfer)
            + u64::from(mix.query);
        if total != 100 {
            return Err(format!("the percentages add up to {total}, not 100"));
        }
        Ok(mix)
    }
}

/// One kind of operation in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Deposit,
    Withdraw,
    Transfer,
    Query,
}

impl Mix {
    /// One draw from `random` (one number from its stream).
    pub(crate) fn draw(&self, random: &mut Random) -> Kind {
        let roll = random.below(100) as u32;
        if roll < self.deposit {
            Kind::Deposit
        } else if roll < self.deposit + self.withdraw {
            Kind::Withdraw
        } else if roll < self.deposit + self.withdraw + self.transfer {
            Kind::Transfer
        } else {
            Kind::Query
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_must_add_up() {
        let mix: Mix = "deposit=40,transfer=60".parse().expect("valid");
        assert_eq!(
            mix,
            Mix {
                deposit: 40,
                withdraw: 0,
                transfer: 60,
                query: 0
            }
        );
        assert!("deposit=40".parse::<Mix>().unwrap_err().contains("40"));
        assert!("teleport=100"
            .parse::<Mix>()
            .unwrap_err()
            .contains("teleport"));
        assert!("deposit=x".parse::<Mix>().is_err());
    }

    #[test]
    fn draws_follow_the_percentages() {
        let mix: Mix = "withdraw=100".parse().expect("valid");
        let mut random = Random::new(1);
        assert!((0..50).all(|_| mix.draw(&mut random) == Kind::Withdraw));
    }
}
