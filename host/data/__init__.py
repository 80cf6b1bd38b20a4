"""Stage 1, recordings -> windows: read a recording (Neo .mat/.nix/.pkl, or a synthetic session),
select trials, bin (40 ms, cached), split by whole trials and cut 12-bin windows as zero-copy views."""
