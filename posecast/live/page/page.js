// posecast live: plays the fragmented MP4 the server sends as it is made (Media Source
// Extensions), keeps the playhead near the live edge, measures each shown frame's latency
// (requestVideoFrameCallback: when it is shown, minus when its audio was due at the server;
// both clocks are this machine's), and reports to the server once a second. With --mic it
// sends the microphone's samples (float32, 20 ms at a time) back.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const video = document.getElementById("video");
const figures = document.getElementById("figures");
const playButton = document.getElementById("play");
const micButton = document.getElementById("mic");
const TARGET_AHEAD_S = 0.2;  // buffered video kept ahead of the playhead: one chunk and a frame
const JUMP_BEHIND_S = 1.0;   // further behind than this, jump to the live edge
const dues = new Map();     // frame index -> when its audio was due (ms since 1970)
const latencies = [];       // ms, every shown frame's
let fps = 25, framesShown = 0, lastReport = null, micSeconds = 0;
let sourceBuffer = null, segments = [], socket = null, micStream = null;

function percentile(values, share) {
  if (!values.length) return null;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))];
}

function appendNext() {
  if (sourceBuffer && !sourceBuffer.updating && segments.length) {
    sourceBuffer.appendBuffer(segments.shift());
  }
}

function keepLive() {
  // near the live edge without skipping frames: play a little faster when the buffer grows,
  // a little slower when it runs low, and jump only when far behind
  const ranges = video.buffered;
  if (!ranges.length) return;
  const ahead = ranges.end(ranges.length - 1) - video.currentTime;
  if (ahead > JUMP_BEHIND_S) video.currentTime = ranges.end(ranges.length - 1) - TARGET_AHEAD_S;
  video.playbackRate = ahead > 1.5 * TARGET_AHEAD_S ? 1.1 : ahead < 0.5 * TARGET_AHEAD_S ? 0.95 : 1.0;
  if (sourceBuffer && !sourceBuffer.updating && video.currentTime - ranges.start(0) > 30) {
    sourceBuffer.remove(0, video.currentTime - 10);  // memory stays flat for hours
  }
  if (video.paused && ahead >= TARGET_AHEAD_S) {
    video.play().catch(() => playButton.classList.remove("hidden"));
  }
}

function onFrame(now, meta) {
  const index = Math.round(meta.mediaTime * fps);
  const due = dues.get(index);
  if (due !== undefined) {
    latencies.push(performance.timeOrigin + meta.expectedDisplayTime - due);
    if (latencies.length > 100000) latencies.splice(0, 50000);
    dues.delete(index);
  }
  framesShown += 1;
  for (const key of dues.keys()) { if (key < index - 2 * fps) dues.delete(key); else break; }
  video.requestVideoFrameCallback(onFrame);
}

function report() {
  const quality = video.getVideoPlaybackQuality();
  const round = (ms) => (ms === null ? null : Math.round(ms) / 1000);
  lastReport = {
    frames_shown: framesShown,
    frames_timed: latencies.length,
    latency_p50_s: round(percentile(latencies, 0.5)),
    latency_p95_s: round(percentile(latencies, 0.95)),
    latency_max_s: round(latencies.length ? Math.max(...latencies) : null),
    frames_dropped: quality.droppedVideoFrames,
    mic_seconds_sent: Math.round(micSeconds * 100) / 100,
    buffered_ahead_s: video.buffered.length ?
      Math.round(1000 * (video.buffered.end(video.buffered.length - 1) - video.currentTime)) / 1000 : null,
  };
  window.posecastReport = lastReport;
  figures.textContent = `frames shown ${lastReport.frames_shown}, dropped ${lastReport.frames_dropped}\n` +
    `latency audio -> screen: p50 ${lastReport.latency_p50_s} s, p95 ${lastReport.latency_p95_s} s`;
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({report: lastReport}));
}

async function startMic() {
  micButton.disabled = true;
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: {echoCancellation: true, noiseSuppression: true, channelCount: 1}});
  micStream = stream;
  const context = new AudioContext();
  const worklet = `class Tap extends AudioWorkletProcessor {
    process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice(0)); return true; } }
    registerProcessor("tap", Tap);`;
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], {type: "text/javascript"})));
  const tap = new AudioWorkletNode(context, "tap");
  const piece = Math.round(context.sampleRate * 0.02);
  let pending = new Float32Array(0);
  socket.send(JSON.stringify({audio_rate: context.sampleRate}));
  tap.port.onmessage = (event) => {
    const joined = new Float32Array(pending.length + event.data.length);
    joined.set(pending); joined.set(event.data, pending.length);
    pending = joined;
    if (socket.readyState !== WebSocket.OPEN) { pending = new Float32Array(0); return; }
    while (pending.length >= piece) {
      socket.send(pending.slice(0, piece).buffer);
      pending = pending.slice(piece);
      micSeconds += 0.02;
    }
  };
  context.createMediaStreamSource(stream).connect(tap);
  tap.connect(context.destination);  // pulled by the graph only when connected; it outputs silence
  await context.resume();
  micButton.textContent = "Listening";
}

function connect() {
  const media = new MediaSource();
  video.src = URL.createObjectURL(media);
  media.addEventListener("sourceopen", () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") { segments.push(event.data); appendNext(); return; }
      const message = JSON.parse(event.data);
      if (message.hello) {
        fps = message.hello.fps;
        sourceBuffer = media.addSourceBuffer(message.hello.codecs);
        sourceBuffer.addEventListener("updateend", appendNext);
        if (message.hello.mic) {
          micButton.classList.remove("hidden");
          if (new URLSearchParams(location.search).get("mic") === "auto") micButton.onclick();
        }
      } else if (message.dues) {
        for (const [index, due] of message.dues) dues.set(index, due);
      }
    };
    socket.onclose = () => {
      figures.textContent += "\n(the stream ended)";
      if (micStream) micStream.getTracks().forEach((track) => track.stop());
    };
  });
}

playButton.onclick = () => { video.play(); playButton.classList.add("hidden"); };
micButton.onclick = () => startMic().catch((error) => {
  micButton.disabled = false;
  figures.textContent = `the microphone could not start: ${error}`;
});
video.requestVideoFrameCallback(onFrame);
setInterval(keepLive, 100);
setInterval(report, 1000);
connect();
