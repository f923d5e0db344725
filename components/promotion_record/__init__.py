"""The record-promotion step: ``<export>.promotion.json`` beside a promoted export, so a scheduled run promotes each tuning output once."""
