"""Stage 5, a deployed decoder on live data: replay trials as a real-time Lab Streaming Layer
stream, run device.live on a board (or here) against it, record its decisions, and compare them
bin for bin with the offline replay; `grasptpu report` draws what happened."""
