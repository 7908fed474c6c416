{
  "targets": [
    {
      "target_name": "taipan",
      "sources": ["<!@(node scripts/list-sources.mjs)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "csrc", "."],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-frtti", "-Wno-unused-function"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-pthread"]
    }
  ]
}
