"""The pure model of ML Ledger: aggregates, events, canonical encoding, hashing,
signatures, Merkle trees and policies. Nothing here performs I/O."""
