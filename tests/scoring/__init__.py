"""Tests of goml_async.scoring."""
