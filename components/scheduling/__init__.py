"""What scheduled and triggered runs need: find what to promote (``discover``) and
remember what was promoted (``promotion_record``)."""
