"""The browser console served at ``/``: static assets in this folder and a few console-only routes."""
