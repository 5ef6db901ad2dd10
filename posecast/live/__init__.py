"""`posecast live`: speech in as it is spoken, the talking video out as it is made.

  sources.py   audio in: a file played at real-time pace, raw PCM on stdin, a browser's mic
  session.py   the loop: audio → causal motion (motion/live.py) → the student chunk by chunk →
               frames and their audio into the encoder; latency, drops, the real-time clock
  fmp4.py      ffmpeg encoding frames + audio to fragmented MP4 as they come, cut into boxes
  server.py    the page on 127.0.0.1 (page/): fragments over a WebSocket into Media Source
               Extensions, the mic's audio and the page's own report back
"""
