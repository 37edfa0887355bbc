"""Tests of goml_async.agent."""
