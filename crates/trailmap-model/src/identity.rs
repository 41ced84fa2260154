//! Identity kinds: the identifiers that tie events from different sources to one customer.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A kind of identifier found on events. Identifiers are namespaced by kind when stitched,
/// so `user_id = 42` and `contact_id = 42` are never confused.
///
/// The declaration order is the preference for a customer's display key: a stitched
/// customer is named by its smallest identifier of the most preferred kind it has, which
/// makes the name independent of the order events arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// An explicit customer / case key (generic logs: the case id of a process log).
    CustomerId,
    /// The product's own account id (Segment `userId`).
    UserId,
    /// An email address, compared case-insensitively.
    Email,
    /// A CRM contact id (HubSpot / Salesforce).
    ContactId,
    /// A help-desk ticket id; links ticket updates that lack the requester's email.
    TicketId,
    /// A device or cookie id for a visitor not yet known (Segment `anonymousId`).
    AnonymousId,
}

impl IdentityKind {
    pub const ALL: [IdentityKind; 6] = [
        IdentityKind::CustomerId,
        IdentityKind::UserId,
        IdentityKind::Email,
        IdentityKind::ContactId,
        IdentityKind::TicketId,
        IdentityKind::AnonymousId,
    ];

    /// The canonical column holding this identifier.
    pub fn column(self) -> &'static str {
        match self {
            IdentityKind::CustomerId => "customer_id",
            IdentityKind::UserId => "user_id",
            IdentityKind::Email => "email",
            IdentityKind::ContactId => "contact_id",
            IdentityKind::TicketId => "ticket_id",
            IdentityKind::AnonymousId => "anonymous_id",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_column(name: &str) -> Option<IdentityKind> {
        IdentityKind::ALL.into_iter().find(|k| k.column() == name)
    }

    /// Normalises a raw identifier: surrounding whitespace never distinguishes customers,
    /// and emails are case-insensitive in practice. Empty means "no identifier".
    #[inline]
    pub fn normalize(self, raw: &str) -> Option<Cow<'_, str>> {
        // Most identifiers neither begin nor end with white space (which is never a visible
        // ASCII character), and `trim` decodes characters at both ends to find that out.
        let trimmed = match raw.as_bytes() {
            [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => raw,
            [only] if only.is_ascii_graphic() => raw,
            _ => raw.trim(),
        };
        if trimmed.is_empty() {
            return None;
        }
        match self {
            IdentityKind::Email if trimmed.bytes().any(|b| b.is_ascii_uppercase()) => {
                Some(Cow::Owned(trimmed.to_ascii_lowercase()))
            }
            _ => Some(Cow::Borrowed(trimmed)),
        }
    }
}

impl std::fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_case_insensitive_and_blank_is_absent() {
        assert_eq!(
            IdentityKind::Email
                .normalize(" Ann@Example.COM ")
                .as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(
            IdentityKind::UserId.normalize("AbC").as_deref(),
            Some("AbC")
        );
        assert_eq!(IdentityKind::AnonymousId.normalize("  "), None);
    }

    #[test]
    fn identifiers_are_trimmed_as_trim_does() {
        let edges = [
            "", " ", "a", "é", "\u{a0}", "\u{3000}", "\t", "\n", "\u{85}", "\x1f",
        ];
        for kind in IdentityKind::ALL {
            for first in edges {
                for last in edges {
                    for middle in ["", "c042", "x y"] {
                        let raw = format!("{first}{middle}{last}");
                        let trimmed = raw.trim();
                        let expected = (!trimmed.is_empty()).then(|| match kind {
                            IdentityKind::Email => trimmed.to_ascii_lowercase(),
                            _ => trimmed.to_string(),
                        });
                        let got = kind.normalize(&raw).map(|c| c.into_owned());
                        assert_eq!(got, expected, "{kind:?} {raw:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn column_names_round_trip() {
        for kind in IdentityKind::ALL {
            assert_eq!(IdentityKind::from_column(kind.column()), Some(kind));
        }
    }
}
