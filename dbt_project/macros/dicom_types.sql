{#
  Casts from DICOM text values (raw) to typed values (stage), one macro per DICOM
  value kind, dispatched per adapter (default__, duckdb__, snowflake__). Every cast is
  safe: a malformed value becomes null, it never fails the build.
#}

{# A raw column by its DICOM keyword. Snowflake: the loader creates unquoted (upper-case)
   columns, quoted here so reserved words (ROWS) still work. #}
{% macro raw_column(keyword) -%}
    {{ return(adapter.dispatch('raw_column', 'dicom_etl')(keyword)) }}
{%- endmacro %}
{% macro default__raw_column(keyword) -%}"{{ keyword }}"{%- endmacro %}
{% macro snowflake__raw_column(keyword) -%}"{{ keyword | upper }}"{%- endmacro %}

{# DS, IS: decimal and integer strings, padded with spaces #}
{% macro dicom_number(column) -%}
    {{ return(adapter.dispatch('dicom_number', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_number(column) -%}
    try_cast(nullif(trim({{ column }}), '') as double)
{%- endmacro %}

{% macro dicom_integer(column) -%}
    {{ return(adapter.dispatch('dicom_integer', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_integer(column) -%}
    try_cast(nullif(trim({{ column }}), '') as bigint)
{%- endmacro %}
{% macro snowflake__dicom_integer(column) -%}
    try_to_number(nullif(trim({{ column }}), ''))
{%- endmacro %}

{# Multi-valued elements: lists (DuckDB) / arrays (Snowflake). #}
{% macro dicom_number_list(column) -%}
    {{ return(adapter.dispatch('dicom_number_list', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_number_list(column) -%}
    list_transform({{ column }}, lambda x: try_cast(nullif(trim(x), '') as double))
{%- endmacro %}
{% macro snowflake__dicom_number_list(column) -%}
    {#- The loader puts Parquet lists into VARIANT arrays. Element-wise casting needs
        TRANSFORM, which fakesnow cannot run: elements stay DS strings on Snowflake. -#}
    {{ column }}::array
{%- endmacro %}

{% macro dicom_text_list(column) -%}
    {{ return(adapter.dispatch('dicom_text_list', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_text_list(column) -%}{{ column }}{%- endmacro %}
{% macro snowflake__dicom_text_list(column) -%}
    {{ column }}::array
{%- endmacro %}

{# DA: YYYYMMDD (also the old YYYY.MM.DD form) #}
{% macro dicom_date(column) -%}
    {{ return(adapter.dispatch('dicom_date', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro duckdb__dicom_date(column) -%}
    try_strptime(replace(nullif(trim({{ column }}), ''), '.', ''), '%Y%m%d')::date
{%- endmacro %}
{% macro snowflake__dicom_date(column) -%}
    try_to_date(replace(nullif(trim({{ column }}), ''), '.', ''), 'YYYYMMDD')
{%- endmacro %}

{# DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX; fraction and offset dropped, missing parts zero. #}
{% macro _dicom_datetime_digits(column) -%}
    rpad(substr(split_part(split_part(split_part(trim({{ column }}), '+', 1), '-', 1), '.', 1), 1, 14), 14, '0')
{%- endmacro %}
{% macro dicom_datetime(column) -%}
    {{ return(adapter.dispatch('dicom_datetime', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro duckdb__dicom_datetime(column) -%}
    try_strptime(nullif({{ _dicom_datetime_digits(column) }}, '00000000000000'), '%Y%m%d%H%M%S')
{%- endmacro %}
{% macro snowflake__dicom_datetime(column) -%}
    try_to_timestamp(nullif({{ _dicom_datetime_digits(column) }}, '00000000000000'), 'YYYYMMDDHH24MISS')
{%- endmacro %}

{# TM: HHMMSS.FFFFFF, any trailing part may be missing (also old HH:MM:SS) #}
{% macro dicom_time(column) -%}
    {{ return(adapter.dispatch('dicom_time', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_time(column) -%}
    try_cast(
        case
            when {{ column }} is null or trim({{ column }}) = '' then null
            else
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 1, 2) || ':' ||
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 3, 2) || ':' ||
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 5, 2) ||
                case when position('.' in trim({{ column }})) > 0
                     then '.' || split_part(trim({{ column }}), '.', 2) else '' end
        end as time)
{%- endmacro %}

{# One typed stage column from a row of the internal_column_types seed. #}
{% macro cast_dicom_column(keyword, type) -%}
    {%- set col = raw_column(keyword) -%}
    {%- if type == 'DA' -%}{{ dicom_date(col) }}
    {%- elif type == 'TM' -%}{{ dicom_time(col) }}
    {%- elif type == 'DT' -%}{{ dicom_datetime(col) }}
    {%- elif type == 'DS' -%}{{ dicom_number(col) }}
    {%- elif type == 'IS' -%}{{ dicom_integer(col) }}
    {%- elif type in ('DS_list', 'IS_list', 'float_list') -%}{{ dicom_number_list(col) }}
    {%- elif type.endswith('_list') -%}{{ dicom_text_list(col) }}
    {%- else -%}{{ col }}
    {%- endif -%}
{%- endmacro %}
