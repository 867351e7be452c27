//! The CLI's words for the API's enums: clap's `ValueEnum` for the types
//! the CLI parses, so those types need not know of clap.

use clap::{ValueEnum, builder::PossibleValue};

use crate::api::{
    Availability,
    specs::{EndpointMode, FailureAction, RestartCondition, UpdateOrder},
};

/// Implements `ValueEnum` for `$type`, each variant with its word.
macro_rules! words {
    ($type:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl ValueEnum for $type {
            fn value_variants<'a>() -> &'a [Self] {
                &[$(<$type>::$variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(match self {
                    $(<$type>::$variant => $word),+
                }))
            }
        }
    };
}

words!(Availability { Active => "active", Pause => "pause", Drain => "drain" });
words!(EndpointMode { Vip => "vip", Dnsrr => "dnsrr" });
words!(RestartCondition { None => "none", OnFailure => "on-failure", Any => "any" });
words!(FailureAction { Pause => "pause", Continue => "continue", Rollback => "rollback" });
words!(UpdateOrder { StopFirst => "stop-first", StartFirst => "start-first" });

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are Docker's, as users type them.
    #[test]
    fn words_parse_as_docker_spells_them() {
        assert_eq!(
            RestartCondition::from_str("on-failure", false),
            Ok(RestartCondition::OnFailure)
        );
        assert_eq!(
            UpdateOrder::from_str("start-first", false),
            Ok(UpdateOrder::StartFirst)
        );
        assert_eq!(
            Availability::from_str("drain", false),
            Ok(Availability::Drain)
        );
        assert!(EndpointMode::from_str("round-robin", false).is_err());
    }
}
