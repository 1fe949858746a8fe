"""The `myapp` the docs' command lines name (`myapp.pipelines:build`, `:release`)."""
